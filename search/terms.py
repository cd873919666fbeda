"""Combined queries (the ``Search`` RPC): checking the terms and combining their embeddings.

A combined query is a list of terms, each a text, image bytes, the id of an indexed image or a raw
vector, with a weight (unset: 1; negative pushes the term's concept down). Every term is embedded
with the model of the collection that answers and L2-normalized, ``e_i = v_i / ||v_i||``, and the
query vector is the L2-normalized weighted sum::

    s = sum_i(w_i * e_i),   q = s / ||s||

Hits are ranked by ``cosine(q, image)``. Since ``cosine(q, x) = sum_i(w_i * cosine(e_i, x)) / ||s||``
for a unit ``x``, a term of negative weight lowers the score of the images like it, in proportion
to its weight. A sum of (nearly) zero length, ``||s|| < MIN_SUM_NORM * sum_i(|w_i|)`` (one term minus
itself, say), has no direction: INVALID_ARGUMENT. One term of weight 1 is the plain search (its
vector, normalized). ``docs/queries.md`` states the same rules for callers.

Everything here is pure (no I/O); ``search.engine.SearchEngine.search`` does the embedding.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.errors import FailedPrecondition, InvalidArgument, T2IError
from core.filters import MAX_VALUE_BYTES, Expression, SearchFilter, literal, schema_needed
from core.records import MAX_ID_BYTES
from search.cutoff import Cutoff
from search.validation import MAX_QUERY_BYTES, require_id, require_query

MAX_TERMS = 16  # terms of one combined query (SearchRequest.terms)
# The weighted sum is refused when its length is below this share of the sum of the weights' sizes:
# its direction would be rounding noise (fp32 embeddings, int8 towers). Two different CLIP texts of
# cosine 0.99 still leave a length of 0.14 for weights 1 and -1 (0.07 of their sizes' sum).
MIN_SUM_NORM = 1e-3


class Kind(enum.Enum):
    """What a term is."""

    TEXT = "text"
    IMAGE = "image"
    ID = "id"
    VECTOR = "vector"


@dataclass(frozen=True)
class Term:
    """One term of a combined query; ``kind`` None when the request set none (refused, naming the term)."""

    kind: Kind | None
    value: str | bytes | Sequence[float] = ""
    weight: float | None = None  # None: 1

    @property
    def text(self) -> str:
        """The value of a text or id term."""
        assert isinstance(self.value, str)
        return self.value

    @property
    def image(self) -> bytes:
        """The value of an image term."""
        assert isinstance(self.value, bytes)
        return self.value


@dataclass(frozen=True)
class TermsQuery:
    """One combined search, as ``SearchRequest`` carries it."""

    terms: Sequence[Term]
    top_k: int
    search_filter: SearchFilter = field(default_factory=SearchFilter)
    min_score: float | None = None
    cutoff: Cutoff = Cutoff.NONE
    exclude_ids: bool = False
    page_token: str = ""


def name(position: int, part: str = "") -> str:
    """How messages name a term (``terms[2]``) or one of its fields (``terms[2].vector``)."""
    return f"terms[{position}]" + (f".{part}" if part else "")


def reworded(error: T2IError, where: str) -> T2IError:
    """``error`` (same class) with its message prefixed by ``where``."""
    return type(error)(f"{where}: {error}")


def check_terms(terms: Sequence[Term], max_query_bytes: int = MAX_QUERY_BYTES) -> list[Term]:
    """The terms with texts stripped and weights resolved (unset: 1), after checking everything that needs no model.

    Raises:
        InvalidArgument: no terms or more than ``MAX_TERMS``; a term of no kind; a weight that is not finite or is 0;
            a blank text; a bad id; an empty, non-finite or all-zero vector. The message names ``terms[i]``.
        ResourceExhausted: a text longer than ``max_query_bytes``, naming the term.
    """
    if not 1 <= len(terms) <= MAX_TERMS:
        raise InvalidArgument(f"terms must hold between 1 and {MAX_TERMS} terms; got {len(terms)}")
    checked = []
    for position, term in enumerate(terms):
        weight = 1.0 if term.weight is None else float(term.weight)
        if not math.isfinite(weight) or weight == 0:
            raise InvalidArgument(f"{name(position, 'weight')} is {weight}; a weight must be finite and not 0 (leave it unset for 1)")
        value = term.value
        try:
            if term.kind is None:
                raise InvalidArgument("set one of text, image, id or vector")
            if term.kind is Kind.TEXT:
                value = require_query(term.text, max_query_bytes)
            elif term.kind is Kind.ID:
                value = require_id(term.text)
            elif term.kind is Kind.IMAGE and not term.image:
                raise InvalidArgument("image is empty; send the encoded bytes of a JPEG, PNG, BMP, GIF, TIFF or WebP image")
            elif term.kind is Kind.VECTOR:
                value = tuple(check_vector(term.value))  # type: ignore[arg-type]
        except T2IError as exc:
            raise reworded(exc, name(position) if term.kind is None else name(position, term.kind.value)) from exc
        checked.append(Term(term.kind, value, weight))
    return checked


def check_vector(values: Sequence[float], dimension: int | None = None) -> np.ndarray:
    """``values`` as float64, checked: ``dimension`` long (None: any length but 0), finite, not all zero.

    Raises:
        InvalidArgument: what is wrong with it (the caller names the term).
    """
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise InvalidArgument("values is empty; send the model's dimension of floats")
    if dimension is not None and vector.size != dimension:
        raise InvalidArgument(f"has {vector.size} values; the collection's model makes vectors of {dimension}")
    if not np.isfinite(vector).all():
        bad = int(np.flatnonzero(~np.isfinite(vector))[0])
        raise InvalidArgument(f"values[{bad}] is {vector[bad]}; every value must be finite")
    if not np.any(vector):
        raise InvalidArgument("is all zero; a zero vector has no direction")
    return vector


def check_dimensions(terms: Sequence[Term], dimension: int) -> None:
    """Every vector term has the collection's ``dimension`` (checked once the collection is known).

    Raises:
        InvalidArgument: naming the first term of another length.
    """
    for position, term in enumerate(terms):
        if term.kind is Kind.VECTOR:
            try:
                check_vector(term.value, dimension)  # type: ignore[arg-type]
            except InvalidArgument as exc:
                raise reworded(exc, name(position, "vector")) from exc


def combine(embeddings: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The query vector ``q = s / ||s||`` of ``s = sum_i(w_i * e_i)``, each ``e_i`` the L2-normalized embedding (float32).

    Raises:
        InvalidArgument: ``||s|| < MIN_SUM_NORM * sum_i(|w_i|)``: the terms cancel out.
    """
    if len(embeddings) != len(weights) or not embeddings:
        raise ValueError("one weight per embedding, at least one")
    total = np.zeros(np.asarray(embeddings[0]).shape, dtype=np.float64)
    for embedding, weight in zip(embeddings, weights, strict=True):
        vector = np.asarray(embedding, dtype=np.float64)
        size = float(np.linalg.norm(vector))
        if size == 0:
            raise ValueError("an embedding of zero length")
        total += weight * (vector / size)
    length = float(np.linalg.norm(total))
    scale = sum(abs(w) for w in weights)
    if length < MIN_SUM_NORM * scale:
        raise InvalidArgument(
            f"the weighted sum of the terms has length {length:.2g} (at least {MIN_SUM_NORM * scale:.2g} is needed): the terms cancel out, "
            "as one term minus itself does; change a weight or drop a term"
        )
    return (total / length).astype(np.float32)


def require_calibratable(terms: Sequence[Term], cutoff: Cutoff) -> None:
    """A calibrated cut-off applies to a combined query only when every term is text with a positive weight.

    Raises:
        FailedPrecondition: ``cutoff`` is ``CALIBRATED`` and some term is not (naming the first).
    """
    if cutoff is not Cutoff.CALIBRATED:
        return
    for position, term in enumerate(terms):
        if term.kind is not Kind.TEXT or (term.weight is not None and term.weight <= 0):
            what = (
                f"an {term.kind.value} term"
                if term.kind is Kind.IMAGE or term.kind is Kind.ID
                else "a vector term"
                if term.kind is Kind.VECTOR
                else "a text term of negative weight"
            )
            raise FailedPrecondition(
                f"cutoff CUTOFF_CALIBRATED: {name(position)} is {what}; the calibrated threshold holds for text queries, so every term must be "
                "text with a positive weight: use CUTOFF_AUTOCUT or min_score"
            )


def excluding(expression: str, ids: Sequence[str]) -> Expression:
    """``expression`` (a ``core.filters.build_expression`` result) that also leaves out ``ids``.

    The result keeps the row schema ``expression`` needs (``core.filters.Expression``), so a metadata
    filter on an older collection stays ``FailedPrecondition`` rather than Milvus's "field not exist".
    """
    parts = [expression] if expression else []
    parts += [f"(id != {literal(item_id, max(MAX_ID_BYTES, MAX_VALUE_BYTES), 'id')})" for item_id in dict.fromkeys(ids)]
    return Expression(" and ".join(parts), schema_needed(expression))


def token_report(tokens: Sequence[int], truncated: Sequence[bool]) -> tuple[int, bool]:
    """What a combined query's response reports about its text terms: their tokens summed, and whether any was truncated."""
    return sum(tokens), any(truncated)
