"""The program writer alone, scored as `voxelprompt evaluate-model` scores the agent's runs, with
ground truth standing in for the vision networks so that only the programs count:

    python benchmarks/program_writer.py [--model DIR] [--per-task 2] [--threads 2] [--out writer.json]

- held-out templated prompts (the evaluation's fixed seed, `--per-task` per task): program exact
  match, execution equivalence, target-name accuracy (the targets a program segments, in order, are
  the expected ones), and programs that run to `stop()`; decoded constrained (as the agent decodes)
  and unconstrained (what the constraint adds);
- the 84 hand-written paraphrases (never used in training), execution-equivalent;
- decoding speed: the median milliseconds per token of the agent's decoder and, for comparison, of
  the `transformers` model with its key-value cache, over a run of 200 tokens after a prefix of 300.

Prints a Markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from voxelprompt.evaluation.paraphrases import load_paraphrases
from voxelprompt.evaluation.scoring import HELD_OUT, held_out_examples, paraphrase_example, score_examples
from voxelprompt.model import SHIPPED_MODEL
from voxelprompt.model.agent import Agent
from voxelprompt.model.decoding import CachedDecoder
from voxelprompt.model.joint import VoxelPromptModel

PREFIX_TOKENS, DECODED_TOKENS, SPEED_REPEATS = 300, 200, 5


def writer_scores(model: VoxelPromptModel, per_task: int) -> dict:
    examples = held_out_examples(per_task, spacing_mm=3.0)
    paraphrases = [(n, paraphrase_example(p, n, spacing_mm=3.0)[0]) for n, p in enumerate(load_paraphrases())]
    scores = {}
    for constrained in (True, False):
        agent = Agent(model, constrained=constrained)
        key = "constrained" if constrained else "unconstrained"
        held_out, _ = score_examples(None, examples, HELD_OUT, agent, truth_vision=True)
        paraphrased, _ = score_examples(None, paraphrases, "paraphrase", agent, truth_vision=True)
        scores[key] = {"held_out_examples": len(held_out),
                       "held_out_exact": float(held_out.program_exact.mean()),
                       "held_out_equivalent": float(held_out.execution_equivalent.mean()),
                       "held_out_finished": float(held_out.finished.mean()),
                       "held_out_targets": float(held_out.targets_correct.mean()),
                       "paraphrases": len(paraphrased),
                       "paraphrase_equivalent": float(paraphrased.execution_equivalent.mean()),
                       "paraphrase_targets": float(paraphrased.targets_correct.mean())}
    return scores


@torch.inference_mode()
def decoding_ms_per_token(model: VoxelPromptModel) -> dict:
    model.eval()
    prefix = torch.randint(0, model.tokenizer.get_vocab_size(), (1, PREFIX_TOKENS))
    token = torch.tensor([[5]])

    def agent_decoder() -> float:
        decoder = CachedDecoder(model.agent, model.config.agent.max_positions)
        decoder.feed(model.embed(prefix)[0])
        started = time.perf_counter()
        for _ in range(DECODED_TOKENS):
            model.logits(decoder.feed(model.embed(token)[0])[-1])
        return (time.perf_counter() - started) * 1000 / DECODED_TOKENS

    def transformers_cache() -> float:
        _, past = model.hidden(model.embed(prefix), use_cache=True)
        started = time.perf_counter()
        for _ in range(DECODED_TOKENS):
            hidden, past = model.hidden(model.embed(token), past=past, use_cache=True)
            model.logits(hidden[0, -1])
        return (time.perf_counter() - started) * 1000 / DECODED_TOKENS

    return {name: statistics.median(measure() for _ in range(SPEED_REPEATS))
            for name, measure in (("agent_decoder_ms", agent_decoder), ("transformers_cache_ms", transformers_cache))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--per-task", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("writer.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = VoxelPromptModel.from_pretrained(args.model)
    results = {"model": str(args.model), "threads": args.threads, "per_task": args.per_task,
               "speed": decoding_ms_per_token(model), **writer_scores(model, args.per_task)}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    on, off, speed = results["constrained"], results["unconstrained"], results["speed"]
    rows = [("held-out templated prompts, program exact match", "held_out_exact"),
            ("held-out templated prompts, execution-equivalent", "held_out_equivalent"),
            ("programs that run to `stop()` without error", "held_out_finished"),
            ("target-name accuracy (templated)", "held_out_targets"),
            ("the hand-written paraphrases, execution-equivalent", "paraphrase_equivalent"),
            ("the hand-written paraphrases, target-name accuracy", "paraphrase_targets")]
    print(f"| measure ({on['held_out_examples']} held-out, {on['paraphrases']} paraphrases) | constrained | unconstrained |")
    print("|---|---|---|")
    for label, key in rows:
        print(f"| {label} | {on[key]:.1%} | {off[key]:.1%} |")
    print(f"| decoding, ms per token ({args.threads} threads) | {speed['agent_decoder_ms']:.2f} "
          f"| `transformers` with its cache: {speed['transformers_cache_ms']:.2f} |")


if __name__ == "__main__":
    main()
