"""The streamed merge engine: elementwise merge methods run on row blocks, so memory is a few blocks, not models.

linear, task_arithmetic, ties, dare_ties and dare_linear combine each output entry from the same entry of every
input, so a tensor can be merged a block of rows at a time: read the block of every input (safetensors slices,
unmapped right after), merge it with mergekit's own method (`merge_tensors`, the same kernels its executor runs),
append it to the output file. Two steps look at a whole tensor, and get one extra pass over its blocks:

- TIES keeps the `density` fraction of each task vector's entries with the largest magnitude: the k-th largest
  |delta| is found exactly by a two-pass radix select on the float32 bit patterns (16 bits per pass); entries tied
  at that magnitude are kept in flat order (mergekit's unstable argsort keeps an arbitrary subset of them).
- DARE rescales the kept entries so the task vector keeps its L1 norm (mergekit's `rescale`): both sums are
  accumulated first, then every block is scaled by the one per-tensor factor.

Sparsified deltas are then combined by mergekit's generalized task arithmetic itself (weights, sign consensus,
normalization, lambda) on a zero base, and added to the base block: mergekit computes `base + mixed_delta` the same
way, so linear / task_arithmetic / ties give the same bits as mergekit's whole-tensor executor.

DARE's random drops come from mergekit's `sparsify` under a generator seeded per (seed, tensor, draw chunk,
input), where a draw chunk is a fixed ~64k-element group of rows: blocks are whole numbers of draw chunks, so the
merged weights do not depend on the block size. They differ from mergekit's executor's draws (one global stream
in its execution order), which is another sample of the same distribution.

Methods whose math is not elementwise (slerp is per tensor, breadcrumbs / della / model_stock / ... need whole
tensors or rows) run on mergekit's executor instead; `why_not_streamed` says why for a given configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

from .. import console
from ..errors import UserError

STREAMED_METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
DRAW_ELEMS = 1 << 16  # DARE's unit of random draws (rounded to whole rows); blocks are whole numbers of these
EPS = 1e-7  # mergekit's rescaled_masked_tensor: no rescale when either L1 norm is below this


# --- inputs ---------------------------------------------------------------------------------------------------


class Checkpoint:
    """The safetensors tensors of one HF folder: names, shapes, dtypes, and row-range reads that do not stay mapped."""

    def __init__(self, folder: str | Path) -> None:
        from safetensors import safe_open
        folder = Path(folder)
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (folder / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            files = []
        self.folder = folder
        self.tensors: dict[str, tuple[Path, tuple[int, ...], str]] = {}
        for name in files:
            with safe_open(str(folder / name), framework="pt") as f:
                for k in f.keys():
                    s = f.get_slice(k)
                    self.tensors[k] = (folder / name, tuple(s.get_shape()), s.get_dtype())

    def read(self, name: str, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
        """Rows [start, stop) as a private copy in `dtype`. safetensors hands out views of its file mapping; the
        copy lets the mapping go when the file closes, so pages read for one block do not stay resident."""
        from safetensors import safe_open
        path, shape, _ = self.tensors[name]
        with safe_open(str(path), framework="pt") as f:
            if not shape:
                return f.get_tensor(name).to(dtype, copy=True)
            return f.get_slice(name)[start:stop].to(dtype, copy=True)


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float))


def why_not_streamed(mk: dict[str, Any]) -> str | None:
    """None if the streamed engine can run this mergekit configuration, else the reason it cannot."""
    method = mk["merge_method"]
    if method not in STREAMED_METHODS:
        return f"method '{method}' is not elementwise (streamed: {', '.join(STREAMED_METHODS)})"
    for k, v in (mk.get("parameters") or {}).items():
        if not _scalar(v):
            return f"parameters.{k} is not a single number (per-layer values need mergekit's executor)"
    paths = [m["model"] for m in mk["models"]]
    if len(set(paths)) != len(paths):
        return "a model is listed twice"
    for m in mk["models"]:
        for k, v in (m.get("parameters") or {}).items():
            if not _scalar(v):
                return f"{k} of {m['model']} is not a single number (per-layer values need mergekit's executor)"
    if mk.get("dtype") not in DTYPES:
        return f"dtype {mk.get('dtype')!r} is not one of {', '.join(DTYPES)}"
    ckpts = [Checkpoint(p) for p in _input_paths(mk)]
    ref = ckpts[0]
    if not ref.tensors:
        return f"{ref.folder} has no safetensors weights"
    for c in ckpts:
        if not c.tensors:
            return f"{c.folder} has no safetensors weights"
        if c.tensors.keys() != ref.tensors.keys():
            return f"{c.folder} and {ref.folder} hold different tensor names"
        for k, (_, shape, dt) in c.tensors.items():
            if shape != ref.tensors[k][1]:
                return f"tensor {k} has shape {shape} in {c.folder} but {ref.tensors[k][1]} in {ref.folder}"
            if dt not in ST_DTYPES:
                return f"tensor {k} in {c.folder} is {dt}, not floating point"
    return None


def _input_paths(mk: dict[str, Any]) -> list[str]:
    """mergekit's input order: the models as listed, then the base model if it is not one of them."""
    paths = [m["model"] for m in mk["models"]]
    base = mk.get("base_model")
    return paths + ([base] if base and base not in paths else [])


# --- output ---------------------------------------------------------------------------------------------------


class SafetensorsWriter:
    """One .safetensors file written tensor by tensor, block by block.

    safetensors' own writers take every tensor of a file in memory at once; here the header (names, dtypes,
    shapes, byte offsets) is known before any data, so it is written first and the data appended as it is merged.
    """

    def __init__(self, path: Path, specs: list[tuple[str, tuple[int, ...], torch.dtype]]) -> None:
        if sys.byteorder != "little":
            raise RuntimeError("safetensors data is little-endian; this machine is not")
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        self.pending: list[tuple[str, int]] = []  # (name, bytes), in file order
        for name, shape, dtype in specs:
            n = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            self.pending.append((name, n))
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self.f = open(path, "wb")
        self.f.write(len(raw).to_bytes(8, "little"))
        self.f.write(raw)
        self.left = 0
        self.name = ""

    def write(self, name: str, block: torch.Tensor) -> None:
        if self.left == 0:
            self.name, self.left = self.pending.pop(0)
        if name != self.name:
            raise RuntimeError(f"writing {name} but the file expects {self.name} next")
        data = block.contiguous().reshape(-1).view(torch.uint8).numpy()
        if data.nbytes > self.left:
            raise RuntimeError(f"{name}: {data.nbytes} bytes written past its end")
        self.f.write(data)
        self.left -= data.nbytes

    def close(self) -> None:
        self.f.close()
        if self.left or self.pending:
            raise RuntimeError("safetensors file closed before all of its tensors were written")


def shard_plan(specs: list[tuple[str, tuple[int, ...], torch.dtype]], max_bytes: int) -> list[list]:
    """mergekit's sharding: a new shard when the next tensor would take this one past max_bytes (0: one shard)."""
    shards: list[list] = [[]]
    size = 0
    for spec in specs:
        n = math.prod(spec[1]) * spec[2].itemsize
        if shards[-1] and max_bytes > 0 and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += n
    return shards


def shard_names(n: int) -> list[str]:
    """HF names, as mergekit gives them: model.safetensors, or model-0000i-of-0000n.safetensors + an index."""
    return ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


# --- blocks and draws -----------------------------------------------------------------------------------------


def row_blocks(shape: tuple[int, ...], block_elems: int) -> tuple[list[tuple[int, int]], int]:
    """Row ranges of at most ~block_elems entries, each a whole number of draw chunks; and the draw chunk's rows."""
    if not shape:
        return [(0, 1)], 1
    row = math.prod(shape[1:])
    chunk = max(1, DRAW_ELEMS // max(row, 1))
    rows = max(1, block_elems // max(row * chunk, 1)) * chunk
    return [(r, min(r + rows, shape[0])) for r in range(0, shape[0], rows)] or [(0, 0)], chunk


def draw_seed(seed: int, tensor: str, chunk: int, entry: int) -> int:
    """A stable 63-bit seed per (config seed, tensor, draw chunk, input): the same on every run and machine."""
    h = hashlib.sha256(f"{seed}\0{tensor}\0{chunk}\0{entry}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# --- sparsification with whole-tensor semantics ---------------------------------------------------------------


@dataclasses.dataclass
class TopK:
    """TIES trim for one input's delta of one tensor: keep the k largest |delta| (k = mergekit's count)."""

    k: int
    hist: torch.Tensor | None = None  # pass 1: counts of the high 16 bits of |delta| (float32 bits)
    wsum: torch.Tensor | None = None  # and their |delta| sums, for the L1 rescale
    hi: int = -1  # the bucket of the k-th largest
    above: int = 0  # entries strictly above that bucket
    above_sum: float = 0.0
    hist2: torch.Tensor | None = None  # pass 2: low 16 bits inside that bucket
    wsum2: torch.Tensor | None = None
    threshold: int = -1  # bit pattern of the k-th largest |delta|
    ties_kept: int = 0  # how many entries equal to it are kept (in flat order)
    ties_seen: int = 0
    factor: float | None = None  # L1 rescale (rescale: true), else None
    total: float = 0.0


def _bits(delta: torch.Tensor) -> torch.Tensor:
    # |x| as float32 (mergekit ranks magnitudes in float32 on CPU); non-negative floats order like their bits
    return delta.abs().float().reshape(-1).view(torch.int32).long()


def _select(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket holding the k-th largest value, and how many values lie in higher buckets."""
    from_top = hist.flip(0).cumsum(0)
    i = int(torch.searchsorted(from_top, torch.tensor([k]))[0])
    return hist.numel() - 1 - i, int(from_top[i - 1]) if i > 0 else 0


def topk_pass1(t: TopK, delta: torch.Tensor, rescale: bool) -> None:
    b = _bits(delta)
    counts = torch.bincount(b >> 16, minlength=1 << 16)
    t.hist = counts if t.hist is None else t.hist + counts
    if rescale:
        w = torch.bincount(b >> 16, weights=delta.abs().double().reshape(-1), minlength=1 << 16)
        t.wsum = w if t.wsum is None else t.wsum + w


def topk_pass2(t: TopK, delta: torch.Tensor, rescale: bool) -> None:
    if t.hi < 0:
        t.hi, t.above = _select(t.hist, t.k)
        if rescale:
            t.above_sum = float(t.wsum[t.hi + 1:].sum())
            t.total = float(t.wsum.sum())
    b = _bits(delta)
    inside = (b >> 16) == t.hi
    lo = b[inside] & 0xFFFF
    counts = torch.bincount(lo, minlength=1 << 16)
    t.hist2 = counts if t.hist2 is None else t.hist2 + counts
    if rescale:
        w = torch.bincount(lo, weights=delta.abs().double().reshape(-1)[inside], minlength=1 << 16)
        t.wsum2 = w if t.wsum2 is None else t.wsum2 + w


def topk_finish(t: TopK, rescale: bool) -> None:
    lo, above_lo = _select(t.hist2, t.k - t.above)
    t.threshold = (t.hi << 16) | lo
    t.ties_kept = t.k - t.above - above_lo
    if rescale:
        value = torch.tensor([t.threshold], dtype=torch.int32).view(torch.float32).item()
        kept = t.above_sum + float(t.wsum2[lo + 1:].sum()) + t.ties_kept * value
        t.factor = t.total / kept if t.total >= EPS and kept >= EPS else None


def topk_apply(t: TopK, delta: torch.Tensor) -> torch.Tensor:
    """The trimmed delta of one block; blocks must come in order (ties are kept first come, first kept)."""
    b = _bits(delta)
    tied = b == t.threshold
    rank = tied.cumsum(0) + (t.ties_seen - 1)
    t.ties_seen += int(tied.sum())
    keep = (b > t.threshold) | (tied & (rank < t.ties_kept))
    out = delta * keep.view(delta.shape).to(delta.dtype)  # mergekit: tensor * mask in the tensor's dtype
    return out * t.factor if t.factor is not None else out


@dataclasses.dataclass
class Dare:
    """DARE for one input's delta of one tensor: mergekit's Bernoulli drop per draw chunk, one L1 factor."""

    density: float
    seeds: list[int]
    chunk_rows: int
    total: float = 0.0
    kept: float = 0.0
    factor: float | None = None


def dare_drop(d: Dare, delta: torch.Tensor, first_row: int) -> torch.Tensor:
    from mergekit.sparsify import SparsificationMethod, sparsify
    parts = []
    for r in range(0, max(delta.shape[0], 1) if delta.dim() else 1, d.chunk_rows):
        part = delta[r:r + d.chunk_rows] if delta.dim() else delta
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(d.seeds[(first_row + r) // d.chunk_rows])
            parts.append(sparsify(part, density=d.density, method=SparsificationMethod.random))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


# --- the merge ------------------------------------------------------------------------------------------------


def _resolve_parameters(method, mk: dict[str, Any], ids: list[str], base: str | None) -> dict[str, Any]:
    """mergekit's parameter precedence for single-number values: the model's own, then the shared one, then the
    method's default; per-input parameters become {input: value}."""
    from mergekit.merge_methods.base import ParameterScope
    shared = dict(mk.get("parameters") or {})
    own = {m["model"]: dict(m.get("parameters") or {}) for m in mk["models"]}
    out: dict[str, Any] = {}
    for p in method.spec.parameters:
        if p.scope == ParameterScope.SHARED:
            out[p.name] = shared.get(p.name, p.default)
            continue
        values = {}
        for i in ids:
            if p.scope == ParameterScope.NON_BASE and i == base:
                continue
            v = own.get(i, {}).get(p.name, shared.get(p.name, p.default))
            if v is None and p.required:
                raise UserError(f"models: {i} has no {p.name}; method '{mk['merge_method']}' needs one for every "
                                "input model")
            values[i] = v
        out[p.name] = values
    return out


def merge_streamed(folder: Path, mk: dict[str, Any], seed: int, shard_bytes: int,
                   block_elems: int = 1 << 18) -> dict[str, Any]:
    """Merge the models of mergekit configuration `mk` into `folder` (weights + config.json), block by block.

    Returns a small summary (tensors, blocks, shards). `folder` must not exist yet; the caller makes it atomic.
    """
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.api import merge_tensors
    from mergekit.merge_methods.generalized_task_arithmetic import GeneralizedTaskArithmeticMerge
    from mergekit.sparsify import SparsificationMethod

    reason = why_not_streamed(mk)
    if reason:
        raise UserError(f"engine: streamed cannot run this merge: {reason}; use engine: mergekit (or auto)")
    method = registry.get(mk["merge_method"])
    ids = _input_paths(mk)
    base = mk.get("base_model")
    ckpts = {i: Checkpoint(i) for i in ids}
    params = _resolve_parameters(method, mk, ids, base)
    compute = DTYPES[mk["dtype"]]
    out_dtype = DTYPES[mk.get("out_dtype") or mk["dtype"]]
    sparsification = getattr(method, "sparsification_method", None) if isinstance(
        method, GeneralizedTaskArithmeticMerge) else None
    if sparsification not in (None, SparsificationMethod.random, SparsificationMethod.magnitude):
        raise UserError(f"engine: streamed cannot sparsify with {sparsification}; use engine: mergekit")
    non_base = [i for i in ids if i != base]
    rescale = bool(params.get("rescale", False))
    if sparsification is not None:
        # mergekit's own combination step without its sparsification: deltas come in already trimmed / dropped
        combine = dataclasses.replace(method, sparsification_method=None)
        combine_params = {k: v for k, v in params.items() if k in {p.name for p in combine.spec.parameters}}
    ref = ckpts[base or ids[0]]
    specs = [(name, shape, out_dtype) for name, (_, shape, _) in ref.tensors.items()]
    shards = shard_plan(specs, shard_bytes)
    names = shard_names(len(shards))
    folder.mkdir(parents=True)
    n_blocks = 0
    with console.progress("merge (streamed)", len(specs)) as bar:
        for shard, fname in zip(shards, names):
            writer = SafetensorsWriter(folder / fname, shard)
            try:
                for name, shape, _ in shard:
                    blocks = TensorBlocks(name, shape, block_elems, ckpts, ids, base, compute)
                    n_blocks += len(blocks.rows)
                    sparse = _prepare(sparsification, blocks, params, rescale, seed)
                    for bi, (r0, _) in enumerate(blocks.rows):
                        x = blocks.read(bi)
                        if sparsification is None:
                            out = merge_tensors([x[i] for i in ids], method, parameters=params, ids=ids,
                                                base_index=ids.index(base) if base else None, dtype=compute)
                        else:
                            trimmed = [_apply(sparse[i], d, r0) for i, d in blocks.deltas(bi)]
                            mixed = merge_tensors([torch.zeros_like(x[base])] + trimmed, combine,
                                                  parameters=combine_params, ids=[base] + non_base, base_index=0,
                                                  dtype=compute)
                            out = x[base] + mixed
                        writer.write(name, out.to(out_dtype))
                        del x, out
                    bar.advance()
            except BaseException:
                writer.f.close()  # the caller removes the half-written folder; keep the original error
                raise
            writer.close()
    if len(shards) > 1:
        weight_map = {spec[0]: fname for shard, fname in zip(shards, names) for spec in shard}
        total = sum(math.prod(s[1]) * s[2].itemsize for s in specs)
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    cfg = json.loads((ref.folder / "config.json").read_text())
    cfg.pop("torch_dtype", None)  # transformers 5 reads `dtype`; mergekit's saved config has only that
    cfg["dtype"] = str(out_dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return {"tensors": len(specs), "blocks": n_blocks, "shards": len(shards), "block_elems": block_elems}


class TensorBlocks:
    """One tensor of every input, as row blocks in the compute dtype."""

    def __init__(self, name, shape, block_elems, ckpts, ids, base, compute) -> None:
        self.name, self.shape, self.ckpts, self.ids, self.base, self.compute = name, shape, ckpts, ids, base, compute
        self.rows, self.chunk_rows = row_blocks(shape, block_elems)
        self.non_base = [i for i in ids if i != base]
        self._one: dict[str, torch.Tensor] | None = None

    def read(self, bi: int) -> dict[str, torch.Tensor]:
        if self._one is not None:
            return self._one
        r0, r1 = self.rows[bi]
        x = {i: self.ckpts[i].read(self.name, r0, r1, self.compute) for i in self.ids}
        if len(self.rows) == 1:  # a one-block tensor is read once for every pass
            self._one = x
        return x

    def deltas(self, bi: int) -> Iterator[tuple[str, torch.Tensor]]:
        """(input, input - base) per non-base input: mergekit's task vectors, in its input order."""
        x = self.read(bi)
        for i in self.non_base:
            yield i, x[i] - x[self.base]


def _prepare(sparsification, blocks: TensorBlocks, params, rescale: bool, seed: int) -> dict:
    """Per input, what its sparsification needs to know about the whole tensor (first pass(es) over the blocks)."""
    from mergekit.sparsify import SparsificationMethod
    if sparsification is None:
        return {}
    numel = math.prod(blocks.shape)
    out: dict[str, Any] = {}
    for e, i in enumerate(blocks.non_base):
        d = float(params["density"][i])
        if d >= 1:
            out[i] = None  # mergekit: density 1 keeps the delta as it is
        elif d <= 0 or numel == 0:
            out[i] = 0.0  # nothing kept
        elif sparsification == SparsificationMethod.magnitude:
            out[i] = TopK(k=max(1, int(d * numel)))
        else:
            n_chunks = math.ceil(blocks.shape[0] / blocks.chunk_rows) if blocks.shape else 1
            out[i] = Dare(density=d, seeds=[draw_seed(seed, blocks.name, c, e) for c in range(n_chunks)],
                          chunk_rows=blocks.chunk_rows)
    live = {i: s for i, s in out.items() if isinstance(s, (TopK, Dare))}
    if not live:
        return out
    if sparsification == SparsificationMethod.magnitude:
        for step in (topk_pass1, topk_pass2):
            for bi in range(len(blocks.rows)):
                for i, delta in blocks.deltas(bi):
                    if i in live:
                        step(live[i], delta, rescale)
        for s in live.values():
            topk_finish(s, rescale)
    elif rescale:
        for bi, (r0, _) in enumerate(blocks.rows):
            for i, delta in blocks.deltas(bi):
                if i in live:
                    s = live[i]
                    s.total += float(delta.abs().sum(dtype=torch.float64))
                    s.kept += float(dare_drop(s, delta, r0).abs().sum(dtype=torch.float64))
        for s in live.values():
            s.factor = s.total / s.kept if s.total >= EPS and s.kept >= EPS else None
    return out


def _apply(s, delta: torch.Tensor, first_row: int) -> torch.Tensor:
    if s is None:
        return delta
    if isinstance(s, float):
        return torch.zeros_like(delta)
    if isinstance(s, TopK):
        return topk_apply(s, delta)
    out = dare_drop(s, delta, first_row)
    return out * s.factor if s.factor is not None else out
