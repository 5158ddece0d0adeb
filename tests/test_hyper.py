"""jaxmlp.hyper: numbers as arrays, None as an absent op (static structure), align and stack."""

import jax
import jax.numpy as jnp
import pytest

from jaxmlp.hyper import Hyper, align, stack, validate


def test_none_means_absent_and_survives_arrays_and_dicts():
    h = Hyper(learning_rate=3e-3, dropout_rate=0.2)
    assert Hyper().dropout_rate is None and Hyper().ema_decay is None and Hyper().input_dropout_rate is None
    a = h.as_arrays()
    assert a.dropout_rate.dtype == jnp.float32 and a.ema_decay is None
    assert Hyper.from_dict(h.to_dict()) == h and h.to_dict()["ema_decay"] is None
    validate(h)  # None fields are not range-checked


def test_presence_is_static_under_jit_and_the_value_is_traced():
    traces = []

    @jax.jit
    def f(h):
        traces.append(h.dropout_rate is None)
        return h.learning_rate if h.dropout_rate is None else h.learning_rate * h.dropout_rate

    assert float(f(Hyper(learning_rate=2.0).as_arrays())) == 2.0
    assert float(f(Hyper(learning_rate=2.0, dropout_rate=0.5).as_arrays())) == 1.0
    assert float(f(Hyper(learning_rate=2.0, dropout_rate=0.25).as_arrays())) == 0.5
    assert traces == [True, False]  # one trace per structure, none per value


def test_align_and_stack_give_members_one_structure():
    hs = [Hyper(), Hyper(dropout_rate=0.3), Hyper(ema_decay=0.9)]
    aligned = align(hs)
    assert [h.dropout_rate for h in aligned] == [0.0, 0.3, 0.0] and [h.ema_decay for h in aligned] == [0.0, 0.0, 0.9]
    assert aligned[0].input_dropout_rate is None  # nobody has it: stays absent
    s = stack(hs)
    assert s.dropout_rate.shape == (3,) and s.input_dropout_rate is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dropout_rate", 1.0, r"dropout rate must lie in \[0, 1\)"),
        ("ema_decay", -0.1, r"ema decay must lie in \[0, 1\)"),
    ],
)
def test_validate_checks_optional_fields_that_are_set(field, value, message):
    with pytest.raises(ValueError, match=message):
        validate(Hyper(**{field: value}))
