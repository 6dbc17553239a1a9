"""LangChain's own standard integration suites (``langchain-tests``) for ChatOllama,
ChatOpenAI, OllamaEmbeddings and OpenAIEmbeddings, run unchanged against ``forge serve`` over
smollm2:135m and minilm:l6.

The capability flags say what the server and these models really do, and the tests of a
capability they lack skip themselves with the suite's own reason (``-ra`` lists them):

- tool calling, ChatOllama only: Ollama's API has no ``tool_choice`` (ChatOllama drops it),
  so the model must choose to call a tool itself, and smollm2:135m (told the tools in a
  system message, its template has no place for them) answers in prose. Through ChatOpenAI,
  ``tool_choice`` makes the server force a call with a grammar, so those tests run (and
  ``test_agent_loop``, which binds tools without a choice, is an xfail).
- images, image URLs, PDFs, audio, image/PDF tool messages, Anthropic-style inputs: no
  vision or audio model runs in this engine (images are refused with a 400).
- ``test_stream_time``: it times the client against recorded VCR cassettes; a live local
  server has nothing to record.

A few are xfails, each with its reason below: ``test_json_mode`` (the 135M model does not
follow the key names its prompt asks for; the grammar-enforced JSON schema mode, which the
structured-output tests use, passes), and through ChatOpenAI ``test_agent_loop`` (a call
the 135M model would have to choose to make).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    EmbeddingsIntegrationTests,
)

import ferrousforge as ff

from .apiserver import Running, running

pytestmark = pytest.mark.slow
CHAT, OTHER_CHAT, EMBEDDER = "smollm2:135m", "smollm2-other:135m", "minilm:l6"
# The cache_read usage tests' own copy of the chat model: only it batches (and so keeps a
# prompt cache). The others run one request at a time, with no cache: a cached prefix
# gives logits a hair off a fresh prompt's, and greedy smollm2 at a near-tie once looped in
# a JSON string until max_tokens after one.
CACHED_CHAT = "smollm2-cached:135m"
# The suites make a client per test and never close it; without idle keep-alive connections
# no socket outlives its request (a socket left to the garbage collector is a ResourceWarning,
# an error here, and an async client's would outlive its test's event loop).
ONE_SHOT = httpx.Limits(max_keepalive_connections=0)
MOST_TOKENS = 256  # greedy smollm2 may repeat itself to the end of its context (2048 tokens)
JSON_MODE = (
    "JSON mode makes the answer JSON (the grammar holds: it parses), but smollm2:135m does "
    "not follow the prompt's 'setup' and 'punchline' keys; json_schema does, and passes"
)


def _openai_clients() -> dict[str, Any]:
    return {
        "http_client": httpx.Client(limits=ONE_SHOT),
        "http_async_client": httpx.AsyncClient(limits=ONE_SHOT),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``forge serve`` over a fresh home that registers the test home's smollm2:135m and
    minilm:l6 in place, plus smollm2:135m under a second name (for the model-override
    tests, which need a second chat model)."""
    test_home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    test_home = test_home.expanduser()
    home = tmp_path_factory.mktemp("langchain-home")
    settings = ff.Settings(
        home=home,
        num_ctx=2048,
        threads=2,
        pull_paths=[test_home / "blobs"],
        num_parallel=1,
        model_parallel={CACHED_CHAT: 4},
    )
    for name in (CHAT, EMBEDDER):
        if not (test_home / "manifests/library" / f"{name.replace(':', '/')}.json").is_file():
            pytest.skip(f"{name} is not in {test_home}; ./dev.sh test pulls it first")
    with ff.Engine(ff.Settings(home=test_home)) as pulled:
        paths = {name: pulled.show(name).path for name in (CHAT, EMBEDDER)}
    with ff.Engine(settings) as engine:
        for name, path in paths.items():
            engine.pull(path, name=name)
        engine.cp(CHAT, OTHER_CHAT)
        engine.cp(CHAT, CACHED_CHAT)
    with running(settings) as srv:
        yield srv


class _Served:
    """The server's URL, for the suite's properties (which take no fixtures)."""

    url = ""

    @pytest.fixture(autouse=True)
    def _server_url(self, server: Running) -> None:
        type(self).url = server.url


class _Chat(_Served, ChatModelIntegrationTests):
    """What both chat clients get from this server and model."""

    @property
    def has_structured_output(self) -> bool:
        return True  # a JSON schema (``format``, ``response_format``), enforced by a grammar

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        return {"method": "json_schema"}

    @property
    def supports_json_mode(self) -> bool:
        return True  # ``format: "json"``, ``response_format: json_object``

    @property
    def model_override_value(self) -> str:
        return OTHER_CHAT

    @pytest.mark.xfail(reason=JSON_MODE, raises=OutputParserException)
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)


class TestChatOllama(_Chat):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatOllama

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": CHAT,
            "base_url": self.url,
            "temperature": 0,
            "seed": 1,
            "num_predict": MOST_TOKENS,
            "client_kwargs": {"limits": ONE_SHOT},
        }

    @property
    def has_tool_calling(self) -> bool:
        # Ollama's API has no tool_choice (ChatOllama drops it): the model must choose to
        # call, and smollm2:135m, told the tools in a system message, answers in prose
        return False


@pytest.mark.filterwarnings(
    # ChatOpenAI's own notices, as against OpenAI: model_dump of the SDK's parsed stream
    # events, and its fallback to function calling for a pydantic.v1 schema
    "ignore:Pydantic serializer warnings:UserWarning",
    "ignore:Received a Pydantic BaseModel V1 schema:UserWarning",
)
class TestChatOpenAI(_Chat):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": CHAT,
            "base_url": self.url + "/v1",
            "api_key": "unused",
            "temperature": 0,
            "seed": 1,
            "max_tokens": MOST_TOKENS,
            "stream_usage": True,
            **_openai_clients(),
        }

    @property
    def has_tool_calling(self) -> bool:
        return True  # with tool_choice the server forces a call through a grammar

    @property
    def has_tool_choice(self) -> bool:
        return True  # "required" or a tool's name: a call object, grammar-enforced

    @property
    def supported_usage_metadata_details(self) -> dict[Any, list[Any]]:
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> Any:
        """A prompt sent twice: the second time all but its last token is cached."""
        model = ChatOpenAI(**(self.chat_model_params | {"model": CACHED_CHAT, "max_tokens": 5}))
        prompt = "Name three colours of the rainbow. " * 8
        model.invoke(prompt)
        if stream:
            full: Any = None
            for chunk in model.stream(prompt):
                full = chunk if full is None else full + chunk
            return full
        return model.invoke(prompt)

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(
        reason="the agent loop binds tools without tool_choice, so the model must choose a "
        "call itself; smollm2:135m, told the tools in a system message, answers in prose",
        raises=AssertionError,
    )
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)


class TestOllamaEmbeddings(_Served, EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return OllamaEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": EMBEDDER, "base_url": self.url, "client_kwargs": {"limits": ONE_SHOT}}


class TestOpenAIEmbeddings(_Served, EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return OpenAIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        # check_embedding_ctx_length: off, or the client tokenizes with tiktoken, whose
        # vocabularies are downloaded; the server counts and bounds tokens itself
        return {
            "model": EMBEDDER,
            "base_url": self.url + "/v1",
            "api_key": "unused",
            "check_embedding_ctx_length": False,
            **_openai_clients(),
        }
