"""Data the experiments run over: corpora, prompt sets, and running work in shards.

    from minillm.data import Corpus, ioi_prompts
    corpus = Corpus.from_jsonl("pile.jsonl", field="text")       # or from_files, from_texts
    for batch in corpus.batches(model, window=128, batch_size=8):  # bounded memory, tokens/s bar
        ...
    pairs = ioi_prompts(200, seed=0, model=model)                  # seeded IOI prompt pairs

This is a package of its own, beside `interp/`, because none of it is an
analysis: a corpus reader, a prompt-set generator and a shard runner are
used by the analyses (`minillm.interp.stats`, `.top_activations`,
`.prompt_sweeps`) and by the command line alike, and know nothing of them.
"""

from minillm.data.corpus import Batch, Corpus, Window
from minillm.data.prompts import PromptPair, ioi_prompts, read_prompts, write_prompts
from minillm.data.shards import ModelSpec, dask_executor, run_shards

__all__ = [
    "Batch",
    "Corpus",
    "ModelSpec",
    "PromptPair",
    "Window",
    "dask_executor",
    "ioi_prompts",
    "read_prompts",
    "run_shards",
    "write_prompts",
]
