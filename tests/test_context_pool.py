"""The llama.cpp engine's pool of cached sequences, on its own (no model): a sample goes back to
its own sequence, whatever it cuts back there, and never takes a live sibling's by prefix.

Token ids stand for text: ``PROMPT`` is a question's prompt, shared by its samples; each
sample's steps are its own ids."""

from __future__ import annotations

from atts.engines._context_pool import ContextPool, Slot

PROMPT = list(range(100))


def pool(n: int) -> ContextPool:
    slots: list[Slot] = []

    def open_slot() -> Slot:
        slot = Slot(len(slots))
        slots.append(slot)
        return slot

    return ContextPool(n, open_slot)


def use(p: ContextPool, ids: list[int], owner: str | None) -> tuple[Slot, int, str]:
    """A request that computes in the slot it gets: afterwards the slot holds ``ids``."""
    slot, shared, history = p.acquire(ids, owner)
    slot.tokens = list(ids)
    p.give_back(slot)
    return slot, shared, history


def test_a_sample_whose_step_was_discarded_goes_back_to_its_own_sequence():
    p = pool(4)
    a_step, b_step = list(range(500, 560)), list(range(600, 660))
    slot_a, _, first = use(p, PROMPT + a_step, "q#0")
    slot_b, _, _ = use(p, PROMPT + b_step, "q#1")  # the sibling, used more recently
    assert first == "first"
    # a's step was rejected and is regenerated: the request is the prompt alone.  By prefix
    # both sequences share exactly the prompt; only the owner says which is a's.
    slot, shared, history = use(p, PROMPT, "q#0")
    assert (slot.seq, shared, history) == (slot_a.seq, len(PROMPT), "own")
    assert slot_b.tokens == PROMPT + b_step  # the sibling's history is intact


def test_a_new_sample_never_takes_a_live_siblings_sequence_by_prefix():
    p = pool(2)
    slot_a, _, _ = use(p, [*PROMPT, 500], "q#0")  # a short step: by prefix it would "extend"
    slot, _, history = use(p, PROMPT, "q#1")
    assert slot.seq != slot_a.seq and history == "first"


def test_with_every_sequence_live_the_cheapest_loss_is_taken_and_counted_as_evicted():
    p = pool(2)
    use(p, PROMPT + list(range(500, 700)), "q#0")  # a long history
    use(p, [*PROMPT, 900], "q#1")  # a short one
    slot, _, history = use(p, [7, 8, 9], "r#0")  # a third sample: the pool is full
    assert slot.tokens == [7, 8, 9] and history == "first"
    _, _, again = use(p, [*PROMPT, 900, 901], "q#1")  # q#1 lost its sequence to r#0
    assert again == "evicted"


def test_a_released_sample_frees_its_sequence_for_the_next_one():
    p = pool(2)
    slot_a, _, _ = use(p, [*PROMPT, 500], "q#0")
    use(p, [*PROMPT, 600], "q#1")
    p.release([*PROMPT, 500])  # q#0's sample ended
    slot, shared, _ = use(p, [*PROMPT, 700], "q#2")
    assert slot.seq == slot_a.seq and shared == len(PROMPT)


def test_requests_without_an_owner_keep_the_prefix_rules():
    p = pool(3)
    slot_a, _, _ = use(p, [*PROMPT, 500], None)
    slot, shared, history = use(p, [*PROMPT, 500, 501], None)
    assert (slot.seq, shared, history) == (slot_a.seq, len(PROMPT) + 1, "first")
