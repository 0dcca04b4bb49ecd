"""benchmarks/retrieval_quality.py's own arithmetic and corpus, without the embedding server:
ranks and scores on vectors whose order is known, the relevant sets, and the category view of
the real filter's surrogates."""

from __future__ import annotations

import numpy as np

from benchmarks.retrieval_quality import KINDS, Query, as_categories, corpus, filtered, scores


def test_scores_rank_by_cosine_and_count_the_first_relevant() -> None:
    docs = np.eye(4)
    # query 0: doc 2 first, doc 1 second; query 1: doc 3 first; query 2: doc 0 first, doc 3 fourth
    queries_vecs = np.array([[0, 0.5, 1, 0], [0, 0, 0, 1], [1, 0.3, 0.2, 0]])
    queries = [
        Query("name + topic", "a", {1}, 0),  # rank 2
        Query("topic only", "b", {3}, None),  # rank 1
        Query("name only", "c", {3}, 0),  # rank 4
    ]
    got = scores(docs, queries_vecs, queries)
    assert got["name + topic"] == {"queries": 1, "recall@1": 0.0, "recall@5": 1.0, "mrr": 0.5}
    assert got["topic only"] == {"queries": 1, "recall@1": 1.0, "recall@5": 1.0, "mrr": 1.0}
    assert got["name only"]["mrr"] == 0.25 and got["name only"]["recall@1"] == 0.0


def test_the_corpus_is_the_seeds_and_its_relevant_sets_are_right() -> None:
    notes, owner, patients, queries = corpus(6, seed=3)
    assert (notes, owner) == corpus(6, seed=3)[:2]
    assert len(notes) == 12 and {q.kind for q in queries} == set(KINDS)
    for q in queries:
        if q.kind == "name + topic":
            (n,) = q.relevant
            assert owner[n] == q.patient and patients[owner[n]].last in q.text
        elif q.kind == "name only":
            assert q.relevant == set(patients[q.patient].notes)  # type: ignore[index]
        else:
            assert q.patient is None and len(q.relevant) >= 1
    for p in patients:
        for n in p.notes:
            assert p.context["kvnr"] in notes[n] and p.last in notes[n]


def test_the_filter_tokenises_the_notes_and_the_category_view_keeps_no_surrogate() -> None:
    notes, owner, patients, _ = corpus(4, seed=5)
    key = bytes(32)
    out = filtered(notes, [patients[o].context for o in owner], key)
    for raw, tok, o in zip(notes, out, owner, strict=True):
        assert patients[o].last not in tok and patients[o].context["kvnr"] not in tok
        assert "[NAME_" in tok and raw != tok
        view = as_categories([tok])[0]
        assert "[NAME_" not in view and "[KVNR_REMOVED]" not in view and "NAME" in view
    assert filtered(notes[:1], [patients[owner[0]].context], key) == out[:1]  # one tenant key: same tokens
