"""Label order: the sorted names, as scikit-learn's LabelEncoder orders them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import LabelEncoder

from shared.labels import fit_labels, label_index

NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=30)


@settings(max_examples=500, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=40))
def test_labels_are_ordered_as_label_encoder_orders_them(names):
    labels = fit_labels(names)
    assert labels == [str(name) for name in LabelEncoder().fit(names).classes_]
    assert [label_index(labels)[name] for name in names] == LabelEncoder().fit(names).transform(names).tolist()
