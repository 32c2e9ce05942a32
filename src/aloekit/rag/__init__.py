"""Retrieval-augmented answering over a user's corpus: `aloekit rag index` (corpus readers, token chunking with
overlap, chunk dedup, then aloekit.retrieval's dense + BM25 index) and `aloekit rag query`. The strategies that
put retrieved passages into a prompt (`rag`, `rag-cot`, `medprompt` with `rag:`) live with the other strategies
in aloekit.medprompt and read the index through aloekit.retrieval. See docs/rag.md."""
