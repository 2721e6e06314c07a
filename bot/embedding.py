"""Embedders: the offline default (WordLlama, weights inside its wheel) and `/v1/embeddings`.

Both return L2-normalised float32 vectors. Work runs off the event loop, and a small cache means
the same text is never embedded twice in a row (a search query, a message being stored).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from openai import AsyncOpenAI, OpenAIError

from bot.errors import ConfigError, ModelError
from bot.llm import provider_detail
from bot.settings import Settings

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]


class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: list[str]) -> list[Vector]: ...

    async def close(self) -> None: ...


def _normalise(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: npt.NDArray[np.float32] = (matrix / norms).astype(np.float32)
    return normalised


class _Cache:
    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.items: OrderedDict[str, Vector] = OrderedDict()

    def get(self, text: str) -> Vector | None:
        found = self.items.get(text)
        if found is not None:
            self.items.move_to_end(text)
        return found

    def put(self, text: str, vector: Vector) -> None:
        self.items[text] = vector
        self.items.move_to_end(text)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class CachedEmbedder:
    """Common part: cache lookups, batching of the misses, one call to `_compute`."""

    name = ""
    dim = 0

    def __init__(self) -> None:
        self._cache = _Cache()

    async def _compute(self, texts: list[str]) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the embedder holds (an HTTP client); nothing for an in-process model."""

    async def embed(self, texts: list[str]) -> list[Vector]:
        found: list[Vector | None] = [self._cache.get(t) for t in texts]
        missing = sorted({t for t, v in zip(texts, found, strict=True) if v is None})
        if missing:
            computed = dict(zip(missing, _normalise(await self._compute(missing)), strict=True))
            for text, vector in computed.items():
                self._cache.put(text, vector)
            found = [v if v is not None else computed[t] for t, v in zip(texts, found, strict=True)]
        return [v for v in found if v is not None]


class WordLlamaEmbedder(CachedEmbedder):
    """WordLlama l2_supercat, 256 dimensions, loaded from the files inside the installed wheel."""

    name = "wordllama-l2-supercat-256"
    dim = 256

    def __init__(self) -> None:
        super().__init__()
        try:
            import wordllama  # type: ignore[import-untyped]
            from safetensors import safe_open  # type: ignore[import-untyped]
            from tokenizers import Tokenizer  # type: ignore[import-untyped]
            from wordllama.inference import WordLlamaInference  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("The wordllama package is missing: run `pip install wordllama`.") from exc
        root = Path(wordllama.__file__).parent
        weights = root / "weights" / "l2_supercat_256.safetensors"
        tokenizer = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
        if not weights.is_file() or not tokenizer.is_file():
            raise ConfigError(
                f"wordllama's bundled files are not at {root}; reinstall it (`pip install --force-reinstall "
                "wordllama`) or set MEMBOT_EMBEDDER=openai:MODEL."
            )
        with safe_open(str(weights), framework="np") as handle:
            matrix = handle.get_tensor("embedding.weight")
        self._model = WordLlamaInference(matrix, Tokenizer.from_file(str(tokenizer)))

    def embed_now(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return np.asarray(self._model.embed(texts), dtype=np.float32)

    async def _compute(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return await asyncio.to_thread(self.embed_now, texts)


class OpenAIEmbedder(CachedEmbedder):
    """Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Ollama, vLLM, ...)."""

    def __init__(self, client: AsyncOpenAI, model: str, dim: int, log_content: bool = False) -> None:
        super().__init__()
        self._client = client
        self.log_content = log_content  # an error body may echo the texts: log it only if asked
        self.model = model
        self.name = f"openai:{model}"
        self.dim = dim

    @classmethod
    async def connect(cls, client: AsyncOpenAI, model: str, log_content: bool = False) -> OpenAIEmbedder:
        """Ask the endpoint once for the model's dimension."""
        probe = cls(client, model, 0, log_content)
        vector = await probe._compute(["dimension probe"])
        probe.dim = int(vector.shape[1])
        return probe

    async def _compute(self, texts: list[str]) -> npt.NDArray[np.float32]:
        try:
            rows: list[list[float]] = []
            for start in range(0, len(texts), 256):
                response = await self._client.embeddings.create(
                    model=self.model, input=texts[start : start + 256], encoding_format="float"
                )
                rows.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        except OpenAIError as exc:
            raise ModelError(
                f"embedding request to {self.model} failed: {provider_detail(exc, self.log_content)}",
                "I couldn't reach the embedding model just now; please try again in a moment.",
            ) from exc
        return np.asarray(rows, dtype=np.float32)

    async def close(self) -> None:
        await self._client.close()


async def make_embedder(settings: Settings) -> Embedder:
    if settings.embedder == "wordllama":
        return await asyncio.to_thread(WordLlamaEmbedder)
    model = settings.embedder.split(":", 1)[1]
    client = AsyncOpenAI(
        api_key=settings.llm_api_key(),
        base_url=settings.embedding_base_url or settings.openai_base_url,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_retries,
    )
    return await OpenAIEmbedder.connect(client, model, settings.log_content)


def to_blob(vector: Vector) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()
