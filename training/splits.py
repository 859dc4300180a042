"""Validation folds that keep related rows together.

Rows of a feature table are windows of tracks, and neighbouring GTZAN tracks are
often by the same artist (Sturm 2013, "The GTZAN dataset: its contents, its
faults, their effects on evaluation and the future use", arXiv:1306.1461). A
split by row puts windows of one track on both sides and measures memory of
recordings, not genre. Two honest schemes:

- **by track**: every window of a track is on the same side (groups = track ids);
- **by blocks**: tracks ``10b .. 10b+9`` of a genre form block ``b``
  (``track_number // 10``) and whole blocks go to one side, so an artist's run
  of consecutive tracks is rarely split. This is the lower, more honest figure.

Folds are stratified by genre: each genre's groups are shuffled (seeded) and
dealt round-robin over the folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.data import FeatureTable

SCHEMES: tuple[str, ...] = ("track", "block")
"""Names of the grouping schemes of :func:`make_groups`."""


def track_groups(table: FeatureTable) -> np.ndarray:
    """Group of each row when splitting by track.

    Returns
    -------
    groups : np.ndarray [shape=(n,), dtype=str]
        The track id (``"blues.00010"``) of each row.
    """
    return np.asarray(table.track_ids, dtype=str)


def block_groups(table: FeatureTable, block_size: int = 10) -> np.ndarray:
    """Group of each row when splitting by blocks of consecutive tracks.

    Parameters
    ----------
    table : FeatureTable
    block_size : int > 0
        Tracks per block: track ``t`` of genre ``g`` is in block ``(g, t // block_size)``.

    Returns
    -------
    groups : np.ndarray [shape=(n,), dtype=str]
        ``"<genre>/<block>"`` for each row, e.g. ``"blues/1"`` for tracks 10-19.
    """
    if block_size < 1:
        raise ValueError(f"block_size: expected a positive integer, got {block_size}")
    return np.array(
        [f"{table.labels[y]}/{n // block_size}" for y, n in zip(table.y, table.track_numbers)],
        dtype=str,
    )


def make_groups(table: FeatureTable, scheme: str, block_size: int = 10) -> np.ndarray:
    """Groups of :func:`track_groups` (``scheme="track"``) or :func:`block_groups` (``"block"``)."""
    if scheme == "track":
        return track_groups(table)
    if scheme == "block":
        return block_groups(table, block_size)
    raise ValueError(f"scheme: expected one of {SCHEMES}, got {scheme!r}")


def group_kfold(
    groups: Sequence[str] | np.ndarray,
    y: Sequence[int] | np.ndarray,
    n_folds: int = 5,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, seeded k-fold split that never divides a group.

    Parameters
    ----------
    groups : array-like [shape=(n,)]
        Group of each row (e.g. :func:`track_groups`); all rows of a group end
        up on the same side of every fold.
    y : array-like [shape=(n,), dtype=int]
        Class of each row; a group's class is that of its first row.
    n_folds : int >= 2
        Number of folds; lowered to the number of groups if there are fewer.
    seed : int
        Seed of the shuffle (:func:`numpy.random.default_rng`).

    Returns
    -------
    folds : list of (train_index, val_index)
        Sorted int64 row indices; every row is in exactly one ``val_index``, and
        each fold's ``val_index`` is not empty.

    Raises
    ------
    ValueError
        If ``groups`` and ``y`` differ in length, or there are fewer than two groups.

    Notes
    -----
    For each class in turn, its groups are shuffled and dealt to folds
    round-robin, continuing the deal where the previous class stopped, so fold
    sizes differ by at most one group per class.
    """
    groups = np.asarray(groups)
    y = np.asarray(y)
    if groups.shape != y.shape or groups.ndim != 1:
        raise ValueError(f"groups and y: expected equal 1-d shapes, got {groups.shape} and {y.shape}")
    unique_groups, first_row, inverse = np.unique(groups, return_index=True, return_inverse=True)
    if len(unique_groups) < 2:
        raise ValueError(f"group_kfold: need at least 2 groups, got {len(unique_groups)}")
    n_folds = int(min(n_folds, len(unique_groups)))
    if n_folds < 2:
        raise ValueError(f"n_folds: expected at least 2, got {n_folds}")
    rng = np.random.default_rng(seed)
    group_class = y[first_row]
    group_fold = np.empty(len(unique_groups), dtype=np.int64)
    dealt = 0
    for cls in np.unique(group_class):
        members = np.flatnonzero(group_class == cls)
        members = members[rng.permutation(len(members))]
        group_fold[members] = (dealt + np.arange(len(members))) % n_folds
        dealt += len(members)
    row_fold = group_fold[inverse]
    rows = np.arange(len(y), dtype=np.int64)
    return [(rows[row_fold != k], rows[row_fold == k]) for k in range(n_folds)]


def holdout_split(
    groups: Sequence[str] | np.ndarray,
    y: Sequence[int] | np.ndarray,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One train/validation split that never divides a group (fold 0 of :func:`group_kfold`).

    Parameters
    ----------
    groups, y : array-like [shape=(n,)]
        As for :func:`group_kfold`.
    val_fraction : float in (0, 0.5]
        Approximate share of groups held out: ``round(1 / val_fraction)`` folds.
    seed : int

    Returns
    -------
    train_index, val_index : np.ndarray [dtype=int64]
    """
    if not 0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction: expected a value in (0, 0.5], got {val_fraction}")
    return group_kfold(groups, y, n_folds=int(round(1 / val_fraction)), seed=seed)[0]
