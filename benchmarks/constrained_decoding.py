"""What constraining a step costs: the project's step checker (`runtime/steps.py`) against
llguidance (a Rust grammar engine with a Lark front end) on the same steps.

    pip install llguidance        # not a dependency of the project; only this comparison needs it
    python benchmarks/constrained_decoding.py [--model DIR] [--programs 26]

For the ground-truth programs of held-out examples (one per task, cycling), every token of every
step is checked as the agent checks it: the checker tests candidates in order of likelihood (here:
the true token first, as with a well-trained model), while llguidance computes the mask of every
allowed token once per position. Printed: the median microseconds per token of each, and what each
can enforce. The Lark grammar holds what a grammar can: the layout, the library's functions with
their argument counts, and the target, contrast and session vocabularies; a name being assigned
before it is used, and the kind of a value (a scan where a scan is taken), depend on the program so
far and on the values the earlier steps computed, which the project's checker follows and a fixed
grammar does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from voxelprompt.model import SHIPPED_MODEL, tokens
from voxelprompt.model.agent import Agent, vocabularies
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library
from voxelprompt.runtime.steps import StepChecker, signature_of
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import sample_example
from voxelprompt.tasks.truth import GroundTruthVision


def lark_grammar(functions: dict, words: dict, mark_id: int) -> str:
    """A Lark grammar of one step in the catalogue's layout, with the vocabularies as alternatives
    (`<[id]>` is llguidance's reference to a special token, here <MOD>)."""
    def choice(strings) -> str:
        return " | ".join(json.dumps(json.dumps(s)) for s in sorted(strings)) or '"\\"\\""'

    calls = []
    for name, function in sorted(functions.items()):
        signature = signature_of(function)
        arguments = []
        for count in range(signature.least, signature.most + 1):
            places = [f"arg_{name}_{n}" if (name, n) in words else "arg" for n in range(count)]
            arguments.append(' ", " '.join(places) or "")
        body = " | ".join(f'"{name}(" {a} ")"' for a in arguments)
        mark = f" <[{mark_id}]>" if name in ("encode", "segment") else ""
        calls.append(f"({body}){mark}")
    rules = [
        'start: statement ("\\n" statement)*',
        'statement: NAME " = " call | call',
        "call: " + " | ".join(calls),
        'arg: call | NAME | STRING | NUMBER | "[" (arg (", " arg)*)? "]"',
        *[f"arg_{name}_{n}: NAME | {choice(strings)}" for (name, n), strings in words.items()],
        'NAME: /[A-Za-z_][A-Za-z0-9_]*/',
        'STRING: /"[^"\\\\\\n]*"/',
        'NUMBER: /-?[0-9]+(\\.[0-9]+)?/',
    ]
    return "\n".join(rules) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--programs", type=int, default=26)
    args = parser.parse_args()
    import llguidance
    import llguidance.hf
    from transformers import PreTrainedTokenizerFast

    model = VoxelPromptModel.from_pretrained(args.model)
    agent = Agent(model)
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=model.tokenizer)
    ll_tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=model.tokenizer.get_vocab_size(),
                                                eos_token=model.special[tokens.END_STEP])
    names = list(catalogue())
    ours, theirs, compile_ms = [], [], []
    for number in range(args.programs):
        example = sample_example(np.random.default_rng([7, number]), names[number % len(names)], 4.0)
        scans = example.subject.scans
        library = Library(list(scans), GroundTruthVision(example.subject))
        environment = Environment(library.functions())
        checker = StepChecker(environment.functions, vocabularies(scans))
        words = vocabularies(scans)
        started = time.perf_counter()
        grammar = llguidance.LLMatcher.grammar_from_lark(lark_grammar(environment.functions, words, model.special[tokens.MOD]))
        compile_ms.append((time.perf_counter() - started) * 1000)
        for step in example.program:
            checker.assigned(environment.namespace)
            ids = model.tokenizer.encode(tokens.mark_vision_calls(step).replace(tokens.PHI, ""),
                                         add_special_tokens=False).ids
            matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
            text = ""
            for token in ids:
                started = time.perf_counter()
                piece = agent.pieces[token]
                assert checker.check(text + piece).name != "INVALID", (step, text + piece)
                ours.append(time.perf_counter() - started)
                text += piece
                started = time.perf_counter()
                mask = matcher.compute_logit_bias()
                theirs.append(time.perf_counter() - started)
                assert mask[token] != 0 or not matcher.is_error(), matcher.get_error()
                matcher.consume_token(token)
            environment.run(step)
    print(f"tokens checked: {len(ours)} over {args.programs} programs")
    print(f"step checker (project): median {statistics.median(ours) * 1e6:.0f} µs per token (one candidate)")
    print(f"llguidance: median {statistics.median(theirs) * 1e6:.0f} µs per token (whole mask); "
          f"grammar compiled in median {statistics.median(compile_ms):.0f} ms per subject")


if __name__ == "__main__":
    main()
