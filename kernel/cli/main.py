"""``forge``: the command line. Parsing and error handling here; the work is in commands.py,
models.py and servers.py."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import ForgeError
from . import commands, models, servers, tensors
from .render import err

DESCRIPTION = """\
FerrousForge runs ML models locally through one engine.

  forge pull smollm2:135m          fetch a model (catalog name, local file/folder, or URL)
  forge run smollm2:135m           chat with it; add a prompt to answer once and exit
  forge list / show / rm / cp      manage the model store ($FORGE_HOME, ~/.ferrousforge)
  forge check                      verify every model's files, sweep what crashes left
  forge ps / devices               what is loaded, and what hardware can run it
  forge infer cls images=x.npy     a tensor model's outputs (ONNX, torch, jax, TensorFlow)
  forge serve                      the Ollama/OpenAI-compatible API on 127.0.0.1:11434
  forge web                        the in-browser demo and forge.js on 127.0.0.1:11435/web/

Settings come from flags, then FORGE_* environment variables, then $FORGE_HOME/config.toml.
"""


def _load_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loading (default: chosen from the model's format and hardware)")
    g.add_argument("--backend", help="backend to use, e.g. llama_cpp")
    g.add_argument("--device", help="device to use, e.g. cpu, cuda:0 (see: forge devices)")
    g.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload to the GPU")
    g.add_argument("--num-ctx", type=int, metavar="N", help="context length in tokens")
    g.add_argument(
        "--keep-alive",
        metavar="DURATION",
        help="how long the model stays loaded after use: 5m, 1h, 0, -1 (forever)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forge", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ferrousforge {__version__}")
    parser.add_argument("--home", help="model store folder (env FORGE_HOME)")
    parser.add_argument("--config", help="TOML settings file (env FORGE_CONFIG)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (default), ERROR")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str, fn: commands.Command) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        return p

    p = cmd("run", "Chat with a model, or answer one PROMPT and exit", commands.run)
    p.add_argument("model", help="model name, e.g. smollm2:135m (pulled if in the catalog)")
    p.add_argument("prompt", nargs="*", help="answer this and exit; '-' or a pipe reads stdin")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--raw", action="store_true", help="plain completion, no chat template")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int, help="sampling seed, for reproducible output")
    p.add_argument("--max-tokens", type=int, metavar="N", help="stop after N tokens")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop sequence (repeatable)")
    p.add_argument("--verbose", action="store_true", help="print timings after each answer")
    _load_flags(p)

    p = cmd("serve", "Serve the Ollama- and OpenAI-compatible HTTP API", servers.serve)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 11434, Ollama's)")
    p.add_argument(
        "--preload",
        action="append",
        metavar="MODEL",
        help="load this model at start and keep it (repeatable)",
    )
    _key_flags(p)
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="requests each model serves at once (default: 4 for llama.cpp, which batches "
        "them: one decode step carries a token of every running sequence; 16 for encoders)",
    )
    p.add_argument(
        "--hub",
        action="store_true",
        default=None,
        help="run as a JupyterHub service (started by the hub, which sets JUPYTERHUB_*): "
        "hub tokens authenticate every request, [hub.groups.NAME] models = [...] in the "
        "config say what each group may use, the hub scope custom:forge:admin administers",
    )
    p.add_argument(
        "--pull-path",
        action="append",
        dest="pull_paths",
        metavar="DIR",
        help="let /api/pull register files under DIR (repeatable; default: none over HTTP)",
    )
    _site_flags(p)

    p = cmd(
        "web",
        "Serve the in-browser app (demo page, forge.js, browser Molds) with the engine's API, "
        "or export it as a static folder",
        servers.web,
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11435, help="port (default 11435)")
    _key_flags(p)
    _site_flags(p)
    p.add_argument(
        "--export",
        type=Path,
        metavar="DIR",
        help="write the page, runtimes and models to DIR for any static host, then exit",
    )
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help="with --export: a model to include (repeatable; default: every browser model)",
    )

    p = cmd("convert", "Convert a model to another format, as a new store entry", commands.convert)
    p.add_argument("model", help="the source model, e.g. minilm:l6")
    p.add_argument(
        "--to",
        required=True,
        choices=["onnx", "tvm"],
        help="onnx: torch.onnx export of a safetensors encoder; "
        "tvm: that graph compiled with Apache TVM (made from the ONNX entry)",
    )
    p.add_argument(
        "--target",
        default="llvm",
        help="TVM target: llvm (this CPU), cuda, 'llvm -mcpu=znver3' or a JSON object",
    )
    p.add_argument(
        "--tune",
        type=int,
        default=0,
        metavar="N",
        help="tune each shape with N meta_schedule trials (slow: ~5 s a trial here)",
    )
    p.add_argument(
        "--shapes",
        type=shape_list,
        help="BATCHxTOKENS shapes to compile ahead, comma-separated "
        "(default: 1 and 8 by 16, 32, 64, 128); others compile on first use",
    )

    p = cmd(
        "parity",
        "Compare a model's embeddings, or a tensor model's outputs, on every backend and "
        "device (backends not installed, or not doing the task, are listed as skipped)",
        commands.parity,
    )
    p.add_argument(
        "model",
        help="e.g. minilm:l6 (reference: torch on cpu), or a tensor model such as an ONNX "
        "graph (reference: its format's own backend on cpu)",
    )
    p.add_argument("--backends", help="comma-separated, e.g. onnx,torch (default: all)")
    p.add_argument("--devices", help="comma-separated, e.g. cpu,cuda:0 (default: all)")
    p.add_argument(
        "--tolerance",
        type=float,
        help="max abs diff (default 1e-5, wgpu 1e-4; for tensors, times the largest |value| "
        "above 1)",
    )
    p.add_argument(
        "--inputs",
        metavar="FILE.npz",
        help="a tensor model's inputs, arrays by input name (default: random ones of the "
        "shapes and datatypes it declares, unknown dimensions 2)",
    )
    p.add_argument("--json", action="store_true", help="the rows as JSON")

    p = cmd("hash-key", "Print the sha256:<hex> form of an API key, for configs", commands.hash_key)
    p.add_argument("key", nargs="?", help="the key (default: read from stdin)")

    p = cmd("pull", "Fetch a model into the store", models.pull)
    p.add_argument("spec", help="catalog name (smollm2:135m), local file or folder, or URL")
    p.add_argument("--name", help="store it under this name")
    p.add_argument("--sha256", help="expected digest of a downloaded file")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a model of another source that the file's or URL's name would take",
    )

    cmd(
        "check",
        "Verify every model's files against its manifest, and sweep what crashes left",
        models.check,
    )

    cmd("list", "List the models in the store", models.list_models)

    p = cmd("show", "Show a model's manifest and metadata", models.show)
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="the whole manifest as JSON")

    p = cmd("rm", "Remove models (files registered in place are left alone)", models.rm)
    p.add_argument("models", nargs="+")

    p = cmd("cp", "Copy a model to a new name (no file is copied)", models.cp)
    p.add_argument("source")
    p.add_argument("destination")

    cmd("ps", "List the models loaded by running engines", models.ps)

    p = cmd("devices", "List the devices each backend can use", models.devices)
    p.add_argument("--json", action="store_true")

    p = cmd("embed", "Print embeddings of TEXTs", commands.embed)
    p.add_argument("model")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--json", action="store_true", help="print the vectors as JSON")
    _load_flags(p)

    p = cmd(
        "infer",
        "Run a tensor model (an ONNX graph, a torch or jax program, a SavedModel) on inputs",
        tensors.infer,
    )
    p.add_argument("model")
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="NAME=VALUE",
        help="an input: a .npy file (images=x.npy) or a JSON array (x='[[1, 2]]', in the "
        "datatype the model declares)",
    )
    p.add_argument("--npz", metavar="FILE", help="inputs from an .npz archive, by name")
    p.add_argument("--outputs", metavar="A,B", help="the outputs to give (default: all)")
    p.add_argument("--save", metavar="FILE.npz", help="save the outputs there (numpy .npz)")
    p.add_argument("--json", action="store_true", help="print the Open Inference Protocol JSON")
    _load_flags(p)
    return parser


def _key_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="require this key (or sha256:<hex>) as Authorization: Bearer; @FILE reads keys "
        "from FILE, and FORGE_API_KEYS=k1,k2 works too, so keys stay out of `ps`",
    )
    p.add_argument("--api-keys-file", metavar="FILE", help="one key or sha256:<hex> per line")


def _site_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="let pages of ORIGIN (https://app.example, http://localhost:*) call the API; "
        "other sites' pages are refused",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        metavar="NAME",
        help="accept this Host name too (a proxy's); other names are refused on 127.0.0.1",
    )


def shape_list(text: str) -> list[tuple[int, int]]:
    """``32x16,1x128`` -> [(32, 16), (1, 128)]."""
    shapes = []
    for item in text.split(","):
        batch, _, tokens = item.strip().lower().partition("x")
        if not (batch.isdigit() and tokens.isdigit() and int(batch) and int(tokens)):
            raise argparse.ArgumentTypeError(
                f"bad shape {item!r}: expected BATCHxTOKENS, e.g. 32x16"
            )
        shapes.append((int(batch), int(tokens)))
    return shapes


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        os.environ["FORGE_CONFIG"] = args.config
    if args.home:
        os.environ["FORGE_HOME"] = args.home
    level = (args.log_level or os.environ.get("FORGE_LOG_LEVEL") or "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ForgeError as e:
        if args.debug:
            raise
        err(f"Error: {e}")
        return 1
    except KeyboardInterrupt:
        err("")
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 141
    except Exception as e:
        if args.debug:
            raise
        err(f"Error: unexpected {type(e).__name__}: {e} (run with --debug for details)")
        return 2
