"""Backend-independent pipeline logic: batch assembly, chain, ordered merging, rates."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from actors.core.batch import BatchAssembler
from actors.core.chain import ReducerChain, reconfigure_specs, runtime_parameters
from actors.core.merger import BatchInfo, OrderedMerger
from actors.core.rates import RateMeter
from actors.core.setup import ChainSetup
from actors.process.worker import Worker
from actors.reduce.base import ReducerConfigError, Series
from actors.wire import dectris_v2, sls
from actors.wire.model import Geometry, Image
from tests.reference.moench_sequential import run_moench_reference

GEOM = Geometry(12, 10, "uint16")
MOENCH = {"type": "moench", "split_pump": True, "pedestal_epoch": 5, "pedestal_lag": 1,
          "pedestal_frames": 20, "threshold": 30.0}


def _frames(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.normal(1000, 10, size=(n, *GEOM.shape))
    photons = rng.random(f.shape) < 0.01
    return np.clip(f + 120 * photons, 0, 65535).astype(np.uint16)


def _images(frames: np.ndarray, numbers: list[int]) -> list[Image]:
    out = []
    for i, f in zip(numbers, frames):
        msg = sls.decode(sls.encode_image(i, f))
        assert isinstance(msg, Image)
        out.append(msg)
    return out


def test_assembler_cuts_at_size_and_epochs_and_keeps_pixels() -> None:
    frames = _frames(23)
    numbers = [i for i in range(25) if i not in (7, 8)]  # two lost frames
    asm = BatchAssembler(1, GEOM, 4, epochs=[5])
    batches = [b for img in _images(frames, numbers) if (b := asm.add(img)) is not None]
    last = asm.flush()
    assert last is not None
    batches.append(last)
    assert [b.index for b in batches] == list(range(len(batches)))
    got = np.concatenate([b.frames() for b in batches])
    np.testing.assert_array_equal(got, frames)
    assert np.concatenate([b.frame_numbers for b in batches]).tolist() == numbers
    previous_last = -1
    for b in batches:  # the cut rule: inside one epoch, or spanning from an untouched epoch
        assert b.n <= 4
        if b.first_frame // 5 != b.last_frame // 5:
            assert previous_last // 5 < b.first_frame // 5, (previous_last, b.frame_numbers)
        previous_last = b.last_frame
        assert pickle.loads(pickle.dumps(b)).frames().tolist() == b.frames().tolist()


def test_assembler_keeps_compressed_payloads_for_the_workers() -> None:
    frames = _frames(5)
    asm = BatchAssembler(1, GEOM, 8)
    for i, f in enumerate(frames):
        msg = dectris_v2.decode(dectris_v2.encode_image(1, i, f, compression="bslz4"))
        assert isinstance(msg, Image)
        assert asm.add(msg) is None
    batch = asm.flush()
    assert batch is not None and batch.pixels is None and batch.blobs is not None
    assert batch.nbytes < frames.nbytes
    np.testing.assert_array_equal(batch.frames(), frames)
    assert asm.discard() == 0 and asm.pending == 0


def _run(chain_specs: list[dict], frames: np.ndarray, batch_size: int,
         order: list[int] | None = None) -> dict:  # type: ignore[type-arg]
    """An in-process coordinator: cut, register, process (in any order), merge."""
    setup = ChainSetup(1, 0, tuple(chain_specs), GEOM)
    chain = setup.build()
    asm = BatchAssembler(1, GEOM, batch_size, chain.epochs)
    batches = [b for img in _images(frames, list(range(len(frames))))
               if (b := asm.add(img)) is not None]
    if (b := asm.flush()) is not None:
        batches.append(b)
    merger = OrderedMerger(chain)
    worker = Worker()
    pending = list(range(len(batches)))
    done: dict[int, object] = {}
    infos = {b.index: BatchInfo(b.index, b.first_frame, b.last_frame, b.n,
                                chain.state_needed(b.first_frame, b.last_frame))
             for b in batches}
    for i in order or pending:
        merger.register(infos[i])
    rng = random.Random(3)
    while pending:  # process whatever has its states, in a shuffled order
        ready = [i for i in pending if merger.states_for(i) is not None]
        assert ready, "no batch can make progress"
        i = rng.choice(ready)
        pending.remove(i)
        done[i] = worker.process(batches[i], merger.states_for(i), setup)
        merger.add(i, done[i])  # type: ignore[arg-type]
    assert merger.outstanding == 0 and merger.processed_frames == len(frames)
    return merger.outputs()


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_ordered_merging_equals_the_sequential_reference(batch_size: int) -> None:
    frames = _frames(40, seed=batch_size)
    shuffled = list(range(40 // batch_size + 20))
    random.Random(1).shuffle(shuffled)
    got = _run([MOENCH], frames, batch_size)
    want = run_moench_reference(frames, np.arange(40),
                                {k: v for k, v in MOENCH.items() if k != "type"})
    for name, value in want.items():
        if isinstance(value, Series):
            np.testing.assert_array_equal(got[name].values, value.values)
        else:
            np.testing.assert_allclose(np.asarray(got[name]), np.asarray(value), rtol=1e-12)


def test_merger_rejects_duplicates_and_unregistered_batches() -> None:
    chain = ReducerChain.from_specs([{"type": "sum"}], GEOM)
    merger = OrderedMerger(chain)
    merger.register(BatchInfo(1, 4, 7, 4, {}))  # registration may come out of order
    merger.register(BatchInfo(0, 0, 3, 4, {}))
    with pytest.raises(ValueError, match="twice"):
        merger.register(BatchInfo(0, 0, 3, 4, {}))
    with pytest.raises(ValueError, match="never registered"):
        merger.add(5, chain.empty())
    assert merger.add(1, chain.empty()) == 0  # waits for batch 0
    assert merger.add(0, chain.empty()) == 2 and merger.processed_frames == 8
    with pytest.raises(ValueError, match="merged twice"):
        merger.add(0, chain.empty())


def test_chain_names_outputs_and_parameters_and_reconfigures() -> None:
    specs = [MOENCH, {"type": "sum"}, {"type": "sum", "name": "sum2"}]
    chain = ReducerChain.from_specs(specs, GEOM)
    names = [s.name for s in chain.outputs_spec()]
    assert "analog_img" in names and "sum" in names and "sum2" in names
    params = {p.name: p for p in chain.parameters()}
    assert params["threshold"].minimum == 0 and "sum.saturation_value" in params
    assert params == {p.name: p for p in runtime_parameters(specs)}  # no geometry needed
    with pytest.raises(ReducerConfigError, match="unknown runtime parameter 'pedestal_epoch'"):
        reconfigure_specs(specs, {"pedestal_epoch": 3})
    out = reconfigure_specs(specs, {"threshold": 5.0, "sum2.saturation_value": 100.0})
    assert out[0]["threshold"] == 5.0 and out[2]["saturation_value"] == 100.0
    with pytest.raises(ReducerConfigError, match="counting_sigma"):
        reconfigure_specs(specs, {"counting_sigma": -1.0})
    with pytest.raises(ReducerConfigError, match="unknown runtime parameter"):
        reconfigure_specs(specs, {"saturation_value": 1.0})  # ambiguous: two reducers


def test_worker_warm_up_tolerates_geometry_dependent_settings() -> None:
    worker = Worker()
    assert worker.warm_up((MOENCH,), None, "uint16") >= 0
    roi = {"type": "roi", "rois": [{"name": "a", "row0": 0, "row1": 100, "col0": 0,
                                    "col1": 100}]}
    assert worker.warm_up((roi,), None, "uint16") == -1.0


def test_rate_meter() -> None:
    m = RateMeter(window=2.0)
    assert m.update(0, now=0.0) == 0.0
    assert m.update(100, now=1.0) == pytest.approx(100.0)
    assert m.update(300, now=3.0) == pytest.approx(100.0)


def test_worker_uses_one_read_only_mask_per_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray deserialises the setup (and its mask) anew for every call: the worker still
    hands the reducers one mask object per setup version, so what kernels derive from it
    (the keep bits) is computed once, not per batch."""
    import actors.reduce.generic.kernels as K

    mask = np.zeros(GEOM.shape, bool)
    mask[3, 4] = True
    setup = ChainSetup(1, 0, ({"type": "sum"}, {"type": "total"}), GEOM, mask=mask)
    frames = np.arange(4 * 12 * 10, dtype=np.uint16).reshape(4, 12, 10)
    asm = BatchAssembler(1, GEOM, 2, [None, None])
    batches = [b for img in _images(frames, list(range(4))) if (b := asm.add(img)) is not None]
    built = []
    real = K._keep_bits

    def spy(m: np.ndarray | None, *args: object) -> np.ndarray:
        built.append(m)
        return real(m, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(K, "_keep_bits", spy)
    worker = Worker()
    outs = [worker.process(b, None, pickle.loads(pickle.dumps(setup))) for b in batches]
    assert len(batches) == 2 and built[0] is built[1] and not built[0].flags.writeable
    want = np.where(mask, 0, frames.astype(np.int64))
    np.testing.assert_array_equal(outs[0]["sum"].image, want[:2].sum(0))
    np.testing.assert_array_equal(outs[1]["sum"].image, want[2:].sum(0))


@pytest.mark.parametrize(("name", "value"), [
    ("threshold", True), ("threshold", "yes"), ("threshold", "80"), ("split_pump", 1),
    ("counting_sigma", None), ("processing_pattern", "[" * 10000),
    ("processing_pattern", '[["up"]]'),
])
def test_runtime_parameters_are_strictly_typed_and_bounded(name: str, value: object) -> None:
    """No bool or text is taken for a number (nor a number for a bool); hostile patterns are
    refused with a reason, not a RecursionError."""
    with pytest.raises(ReducerConfigError, match=name):
        reconfigure_specs([MOENCH], {name: value})


def test_runtime_parameters_take_ints_for_floats_and_numpy_scalars() -> None:
    out = reconfigure_specs([MOENCH], {"threshold": np.int64(50), "split_pump": np.bool_(True),
                                       "counting_sigma": 3})
    assert (out[0]["threshold"], out[0]["split_pump"], out[0]["counting_sigma"]) == \
        (50, True, 3)
    assert type(out[0]["threshold"]) is int and type(out[0]["split_pump"]) is bool
    values = {p.name: p.value for p in runtime_parameters(out)}
    assert values["threshold"] == 50.0 and isinstance(values["threshold"], float)
