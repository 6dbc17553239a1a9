"""The torch backend (extra ``torch``): safetensors folders with config.json, loaded through
``transformers`` from the local folder only, on cpu, cuda or mps. Sentence embeddings, and
cross-encoders (``...ForSequenceClassification``) for rerank; ``open`` is the seam for decoder
models (AutoModelForCausalLM): they are refused there for now. Saved programs (the
``pytorch`` format: ``.pt2`` from ``torch.export``, ``.pt`` TorchScript) answer ``infer``
(:mod:`torch_programs`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..devices import cpu_device
from ..errors import InvalidModelFile, MissingExtra, UnsupportedTask
from ..mold import Device, LoadOptions, Mold
from ..store.formats import is_cross_encoder, is_decoder
from ..store.manifest import Manifest
from .encoders import Batch, EncoderMold
from .tensor_mold import Specs


class TorchBackend:
    name = "torch"
    formats = frozenset({"safetensors", "pytorch"})

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) for m in ("torch", "transformers", "tokenizers"))

    def devices(self) -> list[Device]:
        import torch

        found = [cpu_device(self.name)]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                name = torch.cuda.get_device_name(i)
                found.append(Device(f"cuda:{i}", name, total, free, (self.name,)))
        if torch.backends.mps.is_available():
            found.append(Device("metal:0", "Apple GPU (MPS)", None, None, (self.name,)))
        return found

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return int(manifest.size * 1.2) + (64 << 20)

    def signature(self, manifest: Manifest) -> Specs:
        """A saved program's inputs and outputs (at pull); an encoder folder's stay as
        they are (it takes text, not tensors)."""
        if manifest.format != "pytorch":
            return manifest.metadata.input_shapes, manifest.metadata.output_shapes
        from .torch_programs import signature

        return signature(manifest.file)

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("torch and transformers", "torch")
        if manifest.format == "pytorch":
            from .torch_programs import TorchProgramMold

            return TorchProgramMold(manifest, device, opts, self.estimate_memory(manifest, opts))
        if is_decoder(manifest.file):
            # The seam for generation: a decoder Mold (AutoModelForCausalLM, streaming through
            # a TextIteratorStreamer on the Mold's worker) plugs in here.
            raise UnsupportedTask(
                f"{manifest.name} is a text-generation model; the torch backend only embeds "
                "so far. Run a GGUF of it on llama_cpp"
            )
        return TorchMold(manifest, device, opts, self.estimate_memory(manifest, opts))


class TorchMold(EncoderMold):
    backend = "torch"
    slice_rows = 32  # eager torch's per-call cost outweighs what shorter padding saves
    reranks = True

    def _torch_device(self) -> str:
        return "mps" if self.device.startswith("metal") else self.device

    def _load_runtime(self) -> None:
        import torch

        if self.opts.threads:
            torch.set_num_threads(self.opts.threads)
        try:
            model = _pretrained(self.path)
        except (OSError, ValueError) as e:
            raise InvalidModelFile(f"transformers cannot load {self.path}: {e}") from e
        self._model = model.eval().to(self._torch_device())

    def _hidden(self, batch: Batch) -> Any:
        import torch

        dev = self._torch_device()
        with torch.inference_mode():
            out = self._model(
                input_ids=torch.from_numpy(batch.input_ids).to(dev),
                attention_mask=torch.from_numpy(batch.attention_mask).to(dev),
                token_type_ids=torch.from_numpy(batch.token_type_ids).to(dev),
            )
        found = out.logits if self.cross_encoder else out.last_hidden_state
        return found.float().cpu().numpy()

    def _release(self) -> None:
        super()._release()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()  # hand the cached blocks back: devices() counts them used


def _pretrained(folder: Path) -> Any:
    """The folder's model: its classifier for a cross-encoder, else its bare encoder."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress, not transformers' on stderr
    hf_logging.set_verbosity_error()
    auto = AutoModelForSequenceClassification if is_cross_encoder(folder) else AutoModel
    return auto.from_pretrained(str(folder), local_files_only=True)


def traceable_encoder(folder: Path) -> Any:
    """The folder's encoder as a module of (input_ids, attention_mask, token_type_ids) by
    position returning the last hidden state (a cross-encoder: its logits): what
    ``torch.onnx.export`` and ``torch.export`` trace, immune to the order of the model's own
    ``forward`` arguments."""
    import torch

    model = _pretrained(folder).eval()
    head = is_cross_encoder(folder)

    class Encoder(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.logits if head else out.last_hidden_state

    return Encoder().eval()
