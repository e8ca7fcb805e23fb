"""Features of unstructured data, and their cache (the seed's "transformation registry").

A text or image version in the data store becomes a :class:`~perftune.data.dataset.Dataset` through a transform
(:class:`~perftune.spec.TransformSpec`): a bag of words fitted on the training split only (its vocabulary and
IDF weights never see the test rows), or pixels scaled to 0…1. Computing a vocabulary with stemming takes
seconds, so the features and the fitted transform are cached under ``<workspace>/cache/transforms/<key>/``,
keyed by everything they depend on — the data version, the transform's options, the row sample and the seed —
and shared by every trial, every study and retraining. The fitted transform (``fitted.pkl``) is what serving
applies to raw inputs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from perftune.data.dataset import Dataset, _subsample, _weights
from perftune.data.sources import RawTable
from perftune.data.unstructured import LABEL_COLUMN, SPLIT_COLUMN, TEXT_COLUMN, images_array
from perftune.errors import DatasetError, SpecError
from perftune.spec import DatasetSpec, TransformSpec

_WORD = re.compile(r"(?u)\b[^\W\d_][^\W\d_']+\b")
DEFAULTS = {"text": TransformSpec(kind="tfidf"), "images": TransformSpec(kind="pixels")}
KINDS = {"text": ("tfidf", "counts"), "images": ("pixels",)}


class WordAnalyzer:
    """Text → terms: lower-case words of two or more letters, English stop words dropped, Porter stems, n-grams.
    Picklable (it travels with the fitted vectorizer to serving); stems are memoized per word."""

    def __init__(self, stem: bool = True, stop_words: bool = True, ngram_max: int = 1) -> None:
        self.stem, self.stop_words, self.ngram_max = stem, stop_words, ngram_max
        self._stems: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stems": {}}

    def __call__(self, text: str) -> list[str]:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        words = [w for w in _WORD.findall(text.lower()) if not (self.stop_words and w in ENGLISH_STOP_WORDS)]
        if self.stem:
            words = [self._stem(w) for w in words]
        terms = list(words)
        for n in range(2, self.ngram_max + 1):
            terms += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        return terms

    def _stem(self, word: str) -> str:
        stem = self._stems.get(word)
        if stem is None:
            from nltk.stem.porter import PorterStemmer

            stemmer = self.__dict__.setdefault("_stemmer", PorterStemmer())
            stem = self._stems[word] = stemmer.stem(word)
        return stem


class TextFeatures(TransformerMixin, BaseEstimator):
    """A fitted bag of words: raw texts → float32 feature rows (what serving applies to a request)."""

    def __init__(self, spec: TransformSpec) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.spec = spec
        self.vectorizer = TfidfVectorizer(
            analyzer=WordAnalyzer(spec.stem, spec.stop_words, spec.ngram_max),
            max_features=spec.max_features,
            min_df=spec.min_df,
            use_idf=spec.kind == "tfidf",
            sublinear_tf=spec.kind == "tfidf",
            norm="l2" if spec.kind == "tfidf" else None,
            dtype=np.float32,
        )

    def fit(self, texts: Any, y: Any = None) -> TextFeatures:
        self.vectorizer.fit(as_texts(texts))
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self.vectorizer, "vocabulary_")

    def transform(self, texts: Any) -> np.ndarray:
        """Texts as a list, an N or N×1 array, or a table with a ``text`` column → feature rows."""
        return self.vectorizer.transform(as_texts(texts)).toarray().astype(np.float32, copy=False)

    @property
    def feature_names(self) -> list[str]:
        return [str(t) for t in self.vectorizer.get_feature_names_out()]

    monitor_names: tuple[str, ...] = ("chars", "words", "oov_rate")

    def monitor_features(self, texts: Any) -> np.ndarray:
        """What monitoring watches per text (``monitor_names``): its length in characters and in words, and the
        share of its terms the training vocabulary does not have (a new topic, language or encoding raises it)."""
        analyze, vocabulary = self.vectorizer.build_analyzer(), self.vectorizer.vocabulary_
        rows = []
        for text in as_texts(texts):
            terms = analyze(text)
            unknown = sum(term not in vocabulary for term in terms)
            rows.append((len(text), len(_WORD.findall(text)), unknown / len(terms) if terms else 0.0))
        return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def as_texts(texts: Any) -> list[str]:
    """A list of strings from what a caller or a server hands over (bytes are read as UTF-8)."""
    if isinstance(texts, pd.DataFrame):
        if TEXT_COLUMN not in texts.columns:
            raise ValueError(f"expected a {TEXT_COLUMN!r} column, got {list(texts.columns)}")
        texts = texts[TEXT_COLUMN].to_numpy()
    values = np.asarray(texts, dtype=object).reshape(-1)
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in values]


class PixelFeatures(TransformerMixin, BaseEstimator):
    """Images (N×H×W or N×H·W, 0…255) → float32 rows of H·W pixels scaled to 0…1."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def fit(self, images: Any = None, y: Any = None) -> PixelFeatures:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def transform(self, images: np.ndarray) -> np.ndarray:
        if isinstance(images, pd.DataFrame):
            images = images.to_numpy()
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3 and images.shape[1:] == (self.height, self.width):
            images = images.reshape(len(images), -1)
        if images.ndim != 2 or images.shape[1] != self.height * self.width:
            raise ValueError(
                f"images must be N×{self.height}×{self.width} or N×{self.height * self.width}, got {images.shape}"
            )
        return images / 255.0

    @property
    def feature_names(self) -> list[str]:
        return [f"px_{r}_{c}" for r in range(self.height) for c in range(self.width)]

    monitor_names: tuple[str, ...] = ("mean_intensity", "std_intensity", "dark_fraction")

    def monitor_features(self, images: Any) -> np.ndarray:
        """What monitoring watches per image (``monitor_names``): mean and spread of its pixels (0…1) and the share
        of near-black pixels (below 0.1): exposure, contrast and framing changes move them."""
        pixels = self.transform(images)
        return np.column_stack([pixels.mean(axis=1), pixels.std(axis=1), (pixels < 0.1).mean(axis=1)]).astype(float)


def cache_key(version: str, transform: TransformSpec, sample: int | None, seed: int) -> str:
    payload = {"features": 1, "version": version, "transform": transform.model_dump(), "sample": sample, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def dataset_from_unstructured(raw: RawTable, spec: DatasetSpec, seed: int, workspace: Path) -> Dataset:
    """The features of a text or image store version through its (cached) transform."""
    if raw.kind not in KINDS:
        raise SpecError(
            f"dataset {spec.name!r}: 'transform' applies to text or image datasets of the data store "
            "(perftune data ingest-text / ingest-images), not to tables"
        )
    transform = spec.transform or DEFAULTS[raw.kind]
    if transform.kind not in KINDS[raw.kind]:
        raise SpecError(
            f"dataset {spec.name!r} holds {raw.kind}: transform kind {transform.kind!r} does not apply; "
            f"use one of {', '.join(KINDS[raw.kind])}"
        )
    frame = raw.frame
    if (frame[LABEL_COLUMN].astype(str) == "").any():
        frame = frame.loc[frame[LABEL_COLUMN].astype(str) != ""].reset_index(drop=True)
    y_all = frame[LABEL_COLUMN].to_numpy()
    notes = []
    if spec.sample is not None and spec.sample < len(frame):
        # stratified by label within each split: the sample keeps the store's split and its class balance
        strata = np.array([f"{label}|{split}" for label, split in zip(y_all, frame[SPLIT_COLUMN], strict=True)])
        rows = np.sort(_subsample(strata, spec.sample, seed, stratify=True))
        frame = frame.iloc[rows].reset_index(drop=True)
        notes.append(f"stratified subsample of {spec.sample} of {len(y_all)} rows (seed {seed})")
    key = cache_key(raw.version or "unversioned", transform, spec.sample, seed)
    folder = workspace / "cache" / "transforms" / key
    test = frame[SPLIT_COLUMN].to_numpy() == "test"
    y = frame[LABEL_COLUMN].to_numpy()
    classes = np.unique(y)
    if test.all() or not test.any():
        raise DatasetError(
            f"dataset {spec.name!r} has {int(test.sum())} test rows of {len(test)}: it needs both a training and a "
            "test split (ingest it again with --test-fraction, or raise 'sample')"
        )
    if len(classes) < 2:
        raise DatasetError(f"dataset {spec.name!r} needs at least 2 labels, found {len(classes)}")
    X, names = _cached(folder, lambda: _fit_transform(raw, transform, frame, ~test))  # checked first: no bad entry
    if raw.kind == "text":
        raw_inputs = frame[TEXT_COLUMN].to_numpy(dtype=object).reshape(-1, 1)
    else:
        raw_inputs = images_array(frame, int(raw.meta["height"]), int(raw.meta["width"]))
    return Dataset(
        name=spec.name,
        source=spec.source or "store",
        location=raw.location,
        task="classification",
        X=X,
        y=y,
        feature_names=names,
        target=LABEL_COLUMN,
        fingerprint=str(raw.meta.get("fingerprint") or key),
        classes=classes,
        notes=notes,
        version=raw.version,
        test_rows=np.flatnonzero(test),
        weights=_weights(frame, raw.weight, f"dataset {spec.name!r}") if raw.weight else None,
        scaled=True,
        raw_inputs=raw_inputs,
        transform={
            "data": raw.kind,
            **transform.model_dump(),
            "cache": str(folder),
            "fitted": str(folder / "fitted.pkl"),
        },
    )


def load_fitted(path: str | Path) -> TextFeatures | PixelFeatures:
    """The fitted transform a dataset's card names (``transform.fitted``)."""
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _fit_transform(
    raw: RawTable, transform: TransformSpec, frame: pd.DataFrame, train: np.ndarray
) -> tuple[np.ndarray, list[str], Any]:
    if raw.kind == "text":
        texts = frame[TEXT_COLUMN].tolist()
        fitted: Any = TextFeatures(transform).fit([t for t, keep in zip(texts, train, strict=True) if keep])
        return fitted.transform(texts), fitted.feature_names, fitted
    height, width = int(raw.meta["height"]), int(raw.meta["width"])
    fitted = PixelFeatures(height, width)
    return fitted.transform(images_array(frame, height, width)), fitted.feature_names, fitted


def _cached(folder: Path, compute: Any) -> tuple[np.ndarray, list[str]]:
    """Features and names from the cache folder, or computed and written there (atomically: a folder that is
    complete has ``names.json``, written last)."""
    if (folder / "names.json").is_file():
        try:
            return np.load(folder / "X.npy"), json.loads((folder / "names.json").read_text())
        except (OSError, ValueError):
            pass  # a damaged entry is computed again
    X, names, fitted = compute()
    folder.mkdir(parents=True, exist_ok=True)
    for name, write in (
        ("X.npy", lambda f: np.save(f, X)),
        ("fitted.pkl", lambda f: pickle.dump(fitted, f)),
        ("names.json", lambda f: f.write(json.dumps(names).encode())),
    ):
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            write(handle)
        tmp.replace(folder / name)
    return X, names
