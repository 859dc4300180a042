"""Feature tables for training: the Kaggle GTZAN tables, and the same table computed from audio.

A feature table has one row per window of audio: the 57 features of
:data:`stream.frontends.gtzan.FEATURE_NAMES`, the genre label, and the file name
``<genre>.<NNNNN>.<k>.wav`` (segment ``k`` of track ``NNNNN``) or
``<genre>.<NNNNN>.wav`` (one row per track), as in the Kaggle GTZAN tables
``features_10_sec.csv`` and ``features_30_sec.csv``. The columns may be in any
order; they are selected by name.

Tables computed from a folder of audio (:func:`features_from_audio_dir`) use
:func:`stream.frontends.gtzan.gtzan_features`, the function the engine runs on every
window it classifies, so a model trained on them sees what serving computes.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.frontends.gtzan import FEATURE_NAMES, SAMPLE_RATE, gtzan_features

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout this package lives in."""

SHARED_ENV = "GENRESTREAM_SHARED"
"""Environment variable naming the shared data folder (default ``../shared`` beside the checkout)."""

GTZAN_GENRES: tuple[str, ...] = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)
"""The ten GTZAN genres, in alphabetical order (the class order of the shipped model)."""

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".ogg", ".oga", ".flac", ".mp3", ".m4a", ".aac", ".opus", ".au", ".aiff", ".aif")
"""File name extensions (lower case) that :func:`features_from_audio_dir` decodes."""

# "<genre>.<number>[.<segment>].<extension>", e.g. "blues.00010.0.wav", "rock.00099.wav".
_FILENAME_RE = re.compile(r"^(?P<genre>.+?)\.(?P<number>\d+)(?:\.(?P<segment>\d+))?\.[A-Za-z0-9]+$")
# A track number inside an audio file name: "blues.00012.wav", "blues_00012.au", "00012.mp3".
_TRACK_NUMBER_RE = re.compile(r"(?:^|[._\-\s])(?P<number>\d+)$")


def shared_dir() -> Path:
    """Folder of the shared read-only data (feature tables, test audio).

    Returns
    -------
    path : pathlib.Path
        ``$GENRESTREAM_SHARED`` if set (a relative value is taken relative to the
        current directory), else ``../shared`` relative to the repository root.
        The folder may not exist: callers check.
    """
    value = os.environ.get(SHARED_ENV)
    if value:
        return Path(value).expanduser().resolve()
    return (REPO_ROOT.parent / "shared").resolve()


def gtzan_table_path(name: str = "features_10_sec.csv") -> Path:
    """Path of a Kaggle GTZAN feature table in the shared data folder.

    Parameters
    ----------
    name : str
        File name in ``<shared>/data/gtzan/``: ``"features_10_sec.csv"`` (10 s
        windows, 2694 rows) or ``"features_30_sec.csv"`` (30 s, 900 rows).

    Returns
    -------
    path : pathlib.Path
        ``shared_dir() / "data" / "gtzan" / name`` (not checked for existence).
    """
    return shared_dir() / "data" / "gtzan" / name


@dataclass(frozen=True)
class FeatureTable:
    """A feature table, ready for training.

    Attributes
    ----------
    X : np.ndarray [shape=(n, 57), dtype=float32]
        Raw (unstandardised) features, columns in :data:`stream.frontends.gtzan.FEATURE_NAMES` order.
    y : np.ndarray [shape=(n,), dtype=int64]
        Class index of each row into ``labels``.
    labels : tuple of str
        Class names; ``labels[y[i]]`` is the genre of row ``i``.
    track_ids : np.ndarray [shape=(n,), dtype=str]
        Track of each row, ``"<genre>.<NNNNN>"`` (e.g. ``"blues.00010"``): all
        segments of a track share it.
    track_numbers : np.ndarray [shape=(n,), dtype=int64]
        Track number within its genre (``10`` for ``blues.00010``); consecutive
        numbers are neighbours in the collection (GTZAN: often the same artist).
    filenames : np.ndarray [shape=(n,), dtype=str]
        The ``filename`` column.
    source : str
        Where the table came from (a path, or a description).
    """

    X: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    track_ids: np.ndarray
    track_numbers: np.ndarray
    filenames: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def subset(self, index: np.ndarray) -> FeatureTable:
        """The rows ``index`` (an integer or boolean array) of this table, same labels."""
        return FeatureTable(
            X=self.X[index],
            y=self.y[index],
            labels=self.labels,
            track_ids=self.track_ids[index],
            track_numbers=self.track_numbers[index],
            filenames=self.filenames[index],
            source=self.source,
        )


def parse_filename(filename: str) -> tuple[str, int, int | None]:
    """Split a Kaggle-layout file name into genre, track number and segment.

    Parameters
    ----------
    filename : str
        ``"<genre>.<NNNNN>.<k>.<ext>"`` or ``"<genre>.<NNNNN>.<ext>"``, e.g.
        ``"blues.00010.2.wav"``.

    Returns
    -------
    genre : str
    track_number : int
    segment : int or None
        ``None`` for one-row-per-track names.

    Raises
    ------
    ValueError
        If the name does not have that form.

    Examples
    --------
    >>> parse_filename("blues.00010.2.wav")
    ('blues', 10, 2)
    >>> parse_filename("rock.00099.wav")
    ('rock', 99, None)
    """
    match = _FILENAME_RE.match(filename)
    if match is None:
        raise ValueError(
            f"filename {filename!r}: expected '<genre>.<NNNNN>.<k>.wav' or '<genre>.<NNNNN>.wav'"
        )
    segment = match.group("segment")
    return match.group("genre"), int(match.group("number")), None if segment is None else int(segment)


def load_feature_table(
    path: str | os.PathLike[str],
    labels: Sequence[str] | None = None,
    where: dict[str, str] | None = None,
) -> FeatureTable:
    """Load a feature table in the Kaggle GTZAN layout.

    Parameters
    ----------
    path : str or path-like
        CSV file with a header row holding at least the 57 columns of
        :data:`stream.frontends.gtzan.FEATURE_NAMES`, ``filename`` and ``label``, in
        any order (other columns, e.g. ``length``, are ignored).
    labels : sequence of str or None
        Class names in class-index order. ``None``: the sorted distinct values
        of the ``label`` column (for GTZAN, :data:`GTZAN_GENRES`).
    where : dict of str to str, optional
        Keep only rows whose column ``key`` equals ``value`` for every item,
        e.g. ``{"table": "features_10_sec.csv"}`` for the 10 s rows of
        ``parity_rows.csv``.

    Returns
    -------
    table : FeatureTable
        ``X`` float32 in ``FEATURE_NAMES`` order, ``y`` int64, track ids
        ``"<genre>.<NNNNN>"`` and track numbers parsed from ``filename``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file has no header or no (selected) rows, lacks columns (the message names
        the file and every missing column), has a non-numeric or non-finite
        feature value, a ``filename`` not of the Kaggle form, or a label not in
        ``labels``.

    Examples
    --------
    >>> table = load_feature_table(gtzan_table_path("features_10_sec.csv"))  # doctest: +SKIP
    >>> table.X.shape, table.labels[:2]  # doctest: +SKIP
    ((2694, 57), ('blues', 'classical'))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature table {path}: no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"feature table {path}: empty file, expected a header row")
        header = [name.strip() for name in header]
        where = dict(where or {})
        required = (*FEATURE_NAMES, "filename", "label")
        missing = [name for name in (*required, *where) if name not in header]
        if missing:
            raise ValueError(
                f"feature table {path}: missing {len(missing)} column(s): {', '.join(missing)} "
                f"(expected the Kaggle GTZAN layout: the 57 features of stream.frontends.gtzan.FEATURE_NAMES, "
                f"'filename' and 'label')"
            )
        position = {name: header.index(name) for name in required}
        feature_cols = [position[name] for name in FEATURE_NAMES]
        # (line number in the file, fields) of every non-blank row
        rows = [(reader.line_num, row) for row in reader if row and any(cell.strip() for cell in row)]
    if where:
        selected = [(header.index(k), str(v)) for k, v in where.items()]
        rows = [(n, row) for n, row in rows if all(j < len(row) and row[j].strip() == v for j, v in selected)]
    if not rows:
        raise ValueError(f"feature table {path}: no data rows" + (f" where {where}" if where else ""))

    n = len(rows)
    X = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    filenames: list[str] = []
    row_labels: list[str] = []
    lines = [line for line, _ in rows]
    for i, (line, row) in enumerate(rows):
        if len(row) < len(header):
            raise ValueError(f"feature table {path}, line {line}: {len(row)} fields, header has {len(header)}")
        for j, col in enumerate(feature_cols):
            try:
                X[i, j] = float(row[col])
            except ValueError:
                raise ValueError(
                    f"feature table {path}, line {line}, column {FEATURE_NAMES[j]}: "
                    f"not a number: {row[col]!r}"
                ) from None
        filenames.append(row[position["filename"]].strip())
        row_labels.append(row[position["label"]].strip())
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"feature table {path}, line {lines[i]}, column {FEATURE_NAMES[j]}: non-finite value {X[i, j]}"
        )

    if labels is None:
        labels = sorted(set(row_labels))
    labels = tuple(labels)
    index = {name: k for k, name in enumerate(labels)}
    unknown = sorted(set(row_labels) - set(index))
    if unknown:
        raise ValueError(f"feature table {path}: labels {unknown} are not in the class list {list(labels)}")

    track_ids: list[str] = []
    track_numbers: list[int] = []
    for i, name in enumerate(filenames):
        try:
            genre, number, _ = parse_filename(name)
        except ValueError as error:
            raise ValueError(f"feature table {path}, line {lines[i]}: {error}") from None
        track_ids.append(f"{genre}.{number:05d}")
        track_numbers.append(number)

    return FeatureTable(
        X=X.astype(np.float32),
        y=np.array([index[name] for name in row_labels], dtype=np.int64),
        labels=labels,
        track_ids=np.array(track_ids, dtype=str),
        track_numbers=np.array(track_numbers, dtype=np.int64),
        filenames=np.array(filenames, dtype=str),
        source=str(path),
    )


def write_feature_table(
    table: FeatureTable,
    path: str | os.PathLike[str],
    window_s: float | None = None,
    extra_columns: dict[str, Sequence[str]] | None = None,
) -> Path:
    """Write a table in the Kaggle GTZAN layout (readable by :func:`load_feature_table`).

    Parameters
    ----------
    table : FeatureTable
    path : str or path-like
        CSV file to write (parent folders are created).
    window_s : float or None
        Window length in seconds, written as the ``length`` column in samples at
        22050 Hz; ``None`` leaves ``length`` empty.
    extra_columns : dict of str to sequence of str, optional
        More columns (one value per row) appended after ``label``, e.g. the
        source audio file of each row.

    Returns
    -------
    path : pathlib.Path

    Notes
    -----
    Values are written with 9 significant digits, which round-trips float32.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra_columns = dict(extra_columns or {})
    length = "" if window_s is None else str(int(round(window_s * SAMPLE_RATE)))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "length", *FEATURE_NAMES, "label", *extra_columns])
        for i in range(len(table)):
            writer.writerow(
                [
                    table.filenames[i],
                    length,
                    *(format(float(v), ".9g") for v in table.X[i]),
                    table.labels[table.y[i]],
                    *(values[i] for values in extra_columns.values()),
                ]
            )
    return path


def _safe_name(label: str) -> str:
    """A label as a file-name-safe genre prefix (no dots, slashes or spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", label).strip("_") or "unknown"


def _audio_files(folder: Path, extensions: Iterable[str]) -> list[Path]:
    extensions = {ext.lower() for ext in extensions}
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in extensions and p.is_file() and not p.name.startswith(".")
    )


def _read_fma_genres(tracks_csv: Path) -> dict[int, str]:
    """Map FMA track id to top genre from a ``tracks.csv``.

    Accepts a plain CSV with columns ``track_id`` and ``genre_top``, or FMA's own
    ``fma_metadata/tracks.csv`` with its three header rows (column ``("track",
    "genre_top")``). Tracks with an empty top genre are left out.
    """
    with tracks_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None:
            raise ValueError(f"tracks file {tracks_csv}: empty")
        first = [cell.strip() for cell in first]
        if "track_id" in first and "genre_top" in first:
            id_col, genre_col = first.index("track_id"), first.index("genre_top")
        else:
            # FMA metadata: row 1 top-level names, row 2 sub-names, row 3 "track_id".
            second = [cell.strip() for cell in (next(reader, None) or [])]
            third = next(reader, None)
            genre_col = next(
                (
                    j
                    for j in range(min(len(first), len(second)))
                    if second[j] == "genre_top" and first[j].startswith("track")
                ),
                None,
            )
            if genre_col is None or third is None:
                raise ValueError(
                    f"tracks file {tracks_csv}: expected columns 'track_id' and 'genre_top', "
                    f"or FMA's tracks.csv with a ('track', 'genre_top') column"
                )
            id_col = 0
        genres: dict[int, str] = {}
        for row in reader:
            if len(row) <= max(id_col, genre_col):
                continue
            track, genre = row[id_col].strip(), row[genre_col].strip()
            if track.isdigit() and genre:
                genres[int(track)] = genre
    if not genres:
        raise ValueError(f"tracks file {tracks_csv}: no track with a top genre")
    return genres


def _find_tracks_csv(root: Path) -> Path:
    for candidate in (
        root / "tracks.csv",
        root / "fma_metadata" / "tracks.csv",
        root.parent / "fma_metadata" / "tracks.csv",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"FMA layout: no tracks.csv in {root}, {root / 'fma_metadata'} or {root.parent / 'fma_metadata'}; "
        f"pass tracks_csv"
    )


def _list_gtzan_layout(root: Path, extensions: Iterable[str]) -> list[tuple[Path, str, int]]:
    """``(file, genre, track number)`` for every audio file under ``root/<genre>/``."""
    items: list[tuple[Path, str, int]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _audio_files(folder, extensions)
        if not files:
            continue
        numbers = [_TRACK_NUMBER_RE.search(f.stem) for f in files]
        parsed = [int(m.group("number")) for m in numbers if m is not None]
        if len(parsed) == len(files) and len(set(parsed)) == len(files):
            # Numbered collections (GTZAN's "blues.00012.wav"): keep their numbering,
            # so that blocks of consecutive numbers mean what they mean there.
            track_numbers = parsed
        else:
            track_numbers = list(range(len(files)))  # sorted file order
        items.extend((f, folder.name, k) for f, k in zip(files, track_numbers))
    return items


def _list_fma_layout(root: Path, extensions: Iterable[str], tracks_csv: Path) -> list[tuple[Path, str, int]]:
    genres = _read_fma_genres(tracks_csv)
    items: list[tuple[Path, str, int]] = []
    unlabelled = 0
    for f in _audio_files(root, extensions):
        if not f.stem.isdigit():
            continue
        track = int(f.stem)
        if track in genres:
            items.append((f, genres[track], track))
        else:
            unlabelled += 1
    if unlabelled:
        warnings.warn(f"FMA layout: {unlabelled} audio file(s) under {root} have no top genre in {tracks_csv}; skipped")
    return items


def audio_windows(
    path: str | os.PathLike[str],
    window_s: float = 10.0,
    hop_s: float | None = None,
    max_duration_s: float | None = None,
) -> np.ndarray:
    """Decode one audio file and compute the features of each full window.

    Parameters
    ----------
    path : str or path-like
        Any file :func:`librosa.load` decodes; it is mixed to mono and
        resampled to 22050 Hz.
    window_s : float > 0
        Window length in seconds (10.0 reproduces ``features_10_sec.csv``).
    hop_s : float > 0 or None
        Seconds between window starts; ``None`` = ``window_s`` (windows that do
        not overlap, as the Kaggle tables). Window ``k`` covers samples
        ``[k * hop, k * hop + window)``; a partial last window is dropped.
    max_duration_s : float > 0 or None
        Decode at most the first ``max_duration_s`` seconds (``None``: all).

    Returns
    -------
    features : np.ndarray [shape=(n_windows, 57), dtype=float64]
        ``n_windows`` is 0 for audio shorter than one window.
    """
    import librosa  # deferred: importing librosa costs ~1 s

    hop_s = window_s if hop_s is None else hop_s
    y, _ = librosa.load(path, sr=SAMPLE_RATE, mono=True, duration=max_duration_s)
    window = int(round(window_s * SAMPLE_RATE))
    hop = int(round(hop_s * SAMPLE_RATE))
    starts = range(0, len(y) - window + 1, hop)  # empty when len(y) < window
    rows = [gtzan_features(y[start : start + window], SAMPLE_RATE) for start in starts]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def _windows_or_error(args: tuple[str, float, float | None, float | None]) -> np.ndarray | str:
    path, window_s, hop_s, max_duration_s = args
    try:
        return audio_windows(path, window_s, hop_s, max_duration_s)
    except Exception as error:  # reported per file by the caller
        return f"{type(error).__name__}: {error}"


def features_from_audio_dir(
    root: str | os.PathLike[str],
    layout: str = "gtzan",
    window_s: float = 10.0,
    hop_s: float | None = None,
    max_duration_s: float | None = None,
    tracks_csv: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    n_jobs: int = 1,
    progress: bool = True,
    out_csv: str | os.PathLike[str] | None = None,
) -> FeatureTable:
    """Compute a feature table from a folder of audio, with the serving feature function.

    Parameters
    ----------
    root : str or path-like
        The audio folder.
    layout : {"gtzan", "fma"}
        ``"gtzan"``: one sub-folder per genre, named after it
        (``root/blues/blues.00000.wav``, ...). Files whose names end in distinct
        numbers keep them as track numbers; otherwise tracks are numbered in
        sorted file-name order within the genre.
        ``"fma"``: audio files named by FMA track id (``root/000/000002.mp3``)
        anywhere under ``root``, with genres from ``tracks_csv``; the FMA track
        id is the track number.
    window_s : float > 0
        Window length in seconds; 10.0 matches ``features_10_sec.csv`` and the
        serving window of the shipped model.
    hop_s : float > 0 or None
        Seconds between window starts; ``None`` = ``window_s`` (no overlap).
        A shorter hop gives more (correlated) rows per track; all of a track's
        rows stay on one side of every validation split.
    max_duration_s : float > 0 or None
        Use at most the first ``max_duration_s`` seconds of each file (GTZAN
        clips are 30 s; FMA "full" tracks are minutes long). ``None``: all.
    tracks_csv : str or path-like or None
        ``"fma"`` only: a CSV with columns ``track_id`` and ``genre_top``, or
        FMA's ``fma_metadata/tracks.csv`` (three header rows). ``None``: looked
        for as ``root/tracks.csv``, ``root/fma_metadata/tracks.csv`` and
        ``root/../fma_metadata/tracks.csv``.
    labels : sequence of str or None
        Class names in class-index order; ``None`` = the sorted genres found.
    extensions : sequence of str
        Audio file extensions to decode (lower case, with the dot).
    n_jobs : int >= 1
        Worker processes decoding and computing features (about 0.5 s of CPU
        per 10 s window, most of it in the harmonic/percussive separation).
    progress : bool
        Show a tqdm progress bar over files.
    out_csv : str or path-like or None
        Also write the table there (Kaggle layout plus a ``source`` column
        giving each row's audio file and ``start_s`` its offset in seconds).

    Returns
    -------
    table : FeatureTable
        One row per full window; file names ``"<genre>.<NNNNN>.<k>.wav"`` with
        the genre made file-name safe, ``source`` = ``root``.

    Raises
    ------
    FileNotFoundError
        If ``root`` (or the FMA tracks file) does not exist.
    ValueError
        If ``layout`` is unknown, a duration is not positive, or no
        file yields a window (every file shorter than ``window_s`` or
        undecodable). Files that fail to decode or are too short are skipped
        with a warning naming them.

    Notes
    -----
    Decoding is :func:`librosa.load` (soundfile, falling back to audioread) at
    22050 Hz mono; the features are :func:`stream.frontends.gtzan.gtzan_features`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root}: no such directory")
    for name, value in (("hop_s", hop_s), ("max_duration_s", max_duration_s)):
        if value is not None and not value > 0:
            raise ValueError(f"{name}: expected positive seconds or None, got {value}")
    if not window_s > 0:
        raise ValueError(f"window_s: expected positive seconds, got {window_s}")
    if layout == "gtzan":
        items = _list_gtzan_layout(root, extensions)
    elif layout == "fma":
        items = _list_fma_layout(root, extensions, Path(tracks_csv) if tracks_csv else _find_tracks_csv(root))
    else:
        raise ValueError(f"layout: expected 'gtzan' or 'fma', got {layout!r}")
    if not items:
        raise ValueError(f"audio folder {root}: no audio files ({', '.join(extensions)}) in the {layout!r} layout")

    jobs = [(str(f), window_s, hop_s, max_duration_s) for f, _, _ in items]
    if n_jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # "spawn": the parent may hold TensorFlow's threads, which fork does not copy safely.
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results_iter = pool.map(_windows_or_error, jobs)
            results = list(_progress(results_iter, len(jobs), progress, root))
    else:
        results = [_windows_or_error(job) for job in _progress(jobs, len(jobs), progress, root)]

    failed = [(f, r) for (f, _, _), r in zip(items, results) if isinstance(r, str)]
    short = [f for (f, _, _), r in zip(items, results) if not isinstance(r, str) and len(r) == 0]
    if failed:
        warnings.warn(
            f"{len(failed)} audio file(s) could not be decoded and were skipped: "
            + "; ".join(f"{f}: {r}" for f, r in failed[:10])
        )
    if short:
        warnings.warn(
            f"{len(short)} audio file(s) shorter than one {window_s:g} s window were skipped: "
            + ", ".join(str(f) for f in short[:10])
        )

    found_labels = sorted({genre for (_, genre, _), r in zip(items, results) if not isinstance(r, str) and len(r)})
    if not found_labels:
        raise ValueError(f"audio folder {root}: no file gave a full {window_s:g} s window")
    labels = tuple(labels) if labels is not None else tuple(found_labels)
    index = {name: k for k, name in enumerate(labels)}
    unknown = sorted(set(found_labels) - set(index))
    if unknown:
        raise ValueError(f"audio folder {root}: genres {unknown} are not in the class list {list(labels)}")

    hop = window_s if hop_s is None else hop_s
    X_rows, y, track_ids, track_numbers, filenames, sources, starts = [], [], [], [], [], [], []
    for (f, genre, number), r in zip(items, results):
        if isinstance(r, str):
            continue
        prefix = _safe_name(genre)
        for k, row in enumerate(r):
            X_rows.append(row)
            y.append(index[genre])
            track_ids.append(f"{prefix}.{number:05d}")
            track_numbers.append(number)
            filenames.append(f"{prefix}.{number:05d}.{k}.wav")
            sources.append(str(f.relative_to(root)))
            starts.append(format(k * hop, "g"))
    table = FeatureTable(
        X=np.array(X_rows, dtype=np.float32),
        y=np.array(y, dtype=np.int64),
        labels=labels,
        track_ids=np.array(track_ids, dtype=str),
        track_numbers=np.array(track_numbers, dtype=np.int64),
        filenames=np.array(filenames, dtype=str),
        source=str(root),
    )
    if out_csv is not None:
        write_feature_table(table, out_csv, window_s=window_s, extra_columns={"source": sources, "start_s": starts})
    return table


def _progress(iterable, total: int, enabled: bool, root: Path):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=f"features {root.name}", unit="file")
