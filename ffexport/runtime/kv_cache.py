"""Greedy decoding over the static decode graph with preallocated caches updated in place.

The dynamic ``decode.onnx`` takes each layer's whole cache as an input and returns it grown by one
row: ONNX Runtime's ``session.run`` copies every ``present`` into a new numpy array and the next step
feeds it back, so every token moves the whole cache (host copies growing with the context).

The static decode graph (:class:`ffexport.export.graphs.StaticDecodeStep`) takes caches of a fixed
capacity per layer (its own reduced length + the new tokens, fixed at build time), a
``cache_lengths`` vector, and writes the new token's key/value at row ``cache_lengths[i]``. Here
(the design of onnxruntime-genai's shared past/present buffer) each layer's cache is one
preallocated buffer bound through IO binding as both ``past_key_values.{i}.*`` and
``present.{i}.*``, so ONNX Runtime updates it in place; the token, its position, the lengths and the
logits are small preallocated arrays bound once and rewritten in place. Per token the host writes
``4 + num_layers`` integers and reads ``vocab`` floats, whatever the context length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ffexport.errors import InputError

PAST, PRESENT = "past_key_values.", "present."


class StaticCacheDecoder:
    """``StaticCacheDecoder(session, capacities, ...)``: ``start(presents)`` once per prompt, then
    ``step(token, position) -> logits [1, V]`` per generated token.

    ``session``: an ``onnxruntime.InferenceSession`` of a static decode graph; ``capacities``: each
    layer's cache rows (the graph's static size). ``device``: where the caches live (``cpu``, or
    ``cuda`` with the CUDA provider: nothing then crosses to the host but the logits).
    """

    def __init__(self, session, capacities: Sequence[int], *, device: str = "cpu") -> None:
        import onnxruntime as ort

        self.session, self.capacities, self.device = session, tuple(int(c) for c in capacities), device
        inputs = {i.name: i for i in session.get_inputs()}
        self.num_layers = len(self.capacities)
        first = inputs.get(f"{PAST}0.key")
        if first is None or "cache_lengths" not in inputs:
            raise InputError("the decode graph is not a static one (no cache_lengths / past_key_values.0.key input)")
        _, self.kv_heads, _, self.head_dim = first.shape
        self.dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}[first.type]
        vocab = session.get_outputs()[0].shape[-1]
        self.ids = np.zeros((1, 1), np.int64)
        self.positions = np.zeros((3, 1), np.int64)
        self.lengths = np.zeros((self.num_layers,), np.int64)
        self.logits = np.zeros((1, vocab), np.float32)
        self.binding = session.io_binding()
        for name, array in (("input_ids", self.ids), ("position_ids", self.positions),
                            ("cache_lengths", self.lengths)):
            self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        self.binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self.logits))
        self.caches: list[object] = []
        #: on CPU the caches are these numpy arrays (the OrtValues share their memory)
        self.arrays: list[np.ndarray] = []
        for i, capacity in enumerate(self.capacities):
            for kind in ("key", "value"):
                shape = [1, self.kv_heads, capacity, self.head_dim]
                if device == "cpu":
                    self.arrays.append(np.zeros(shape, self.dtype))
                    buffer = ort.OrtValue.ortvalue_from_numpy(self.arrays[-1])
                else:
                    buffer = ort.OrtValue.ortvalue_from_shape_and_type(shape, self.dtype, device)
                self.binding.bind_ortvalue_input(f"{PAST}{i}.{kind}", buffer)
                self.binding.bind_ortvalue_output(f"{PRESENT}{i}.{kind}", buffer)  # the same buffer: in place
                self.caches.append(buffer)
        self._base = np.zeros(self.num_layers, np.int64)

    def start(self, presents: dict[str, np.ndarray]) -> None:
        """Copy the prefill's caches (``{i}.key`` / ``{i}.value`` -> [1, kv_heads, L_i, head_dim]) into the
        buffers: once per prompt. The rows past ``L_i`` are never read before they are written."""
        for i in range(self.num_layers):
            length = presents[f"{i}.key"].shape[2]
            if length >= self.capacities[i]:
                raise InputError(f"layer {i}'s prompt cache has {length} rows; the decode graph holds {self.capacities[i]}")
            for j, kind in enumerate(("key", "value")):
                buffer = self.caches[2 * i + j]
                if self.device == "cpu":
                    self.arrays[2 * i + j][:, :, :length] = presents[f"{i}.{kind}"]
                else:
                    full = np.zeros((1, self.kv_heads, self.capacities[i], self.head_dim), self.dtype)
                    full[:, :, :length] = presents[f"{i}.{kind}"]
                    buffer.update_inplace(full)
            self._base[i] = length
        self.steps = 0

    def room(self) -> int:
        """Tokens that still fit in every layer's cache."""
        return int(min(c - b for c, b in zip(self.capacities, self._base))) - self.steps

    def step(self, token: int, position: int) -> np.ndarray:
        """Run one token at M-RoPE position ``position``; its key/value land in the caches in place.
        Returns the logits [1, V] in a buffer the next step rewrites (copy it to keep it)."""
        if self.room() < 1:
            raise InputError(f"the decode caches are full ({self.capacities}); rebuild with a larger --max-new-tokens")
        self.ids[0, 0] = token
        self.positions[:, 0] = position
        np.add(self._base, self.steps, out=self.lengths)
        self.session.run_with_iobinding(self.binding)
        self.steps += 1
        return self.logits
