"""InherituneLM: lm-evaluation-harness's model interface (TemplateLM) over an in-memory GPT, packed.

Loglikelihood requests that share a context are packed into one sequence: the context once, then every
continuation as a branch of a prefix tree that attends to the context and to its own earlier tokens only
(explicit mask and positions), so a 4-way multiple-choice question costs one pass over its context instead of
four, and the head runs only where a token is scored. Scores match HFLM's request by request
(tests/test_eval.py); bench/eval_throughput.py measures the speed. eval.py runs tasks on it; without lm-eval
installed this module still imports (val loss needs none of it)."""

import functools
import json
import logging

import torch
from tqdm import tqdm

from inheritune.util import UserError

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError:
    TemplateLM = None
log = logging.getLogger("eval")


def lm_eval_installed() -> bool:
    return TemplateLM is not None


# ----------------------------------------------------------------------------------- packed forward


def head_log_probs(model, h):
    """log-softmax over the real vocabulary (no padding rows) for hidden states h (N, n_embd), in float32."""
    return model.lm_head(h)[:, : model.config.vocab_size].float().log_softmax(dim=-1)


class Row:
    """One sequence of a forward pass: a prefix (a plain causal run), then the continuations that follow it,
    merged into a prefix tree: a token shared by several continuations (" a" in " a cat" / " a dog") is
    computed once. Continuations are added in sorted order, so the tree is laid out in preorder: each subtree
    is a contiguous run."""

    def __init__(self, prefix):
        self.tokens, self.positions, self.n_prefix = list(prefix), list(range(len(prefix))), len(prefix)
        self.members = []  # (request index, row offsets whose predictions are scored, targets)
        self.nodes = {}  # (parent offset, token) -> offset; parent -1 is the prefix's end

    def add(self, index, continuation):
        """Insert one continuation: its input tokens (all but the last) not already in the tree become new
        tokens."""
        parent, path = -1, []
        for token in continuation[:-1]:
            if (parent, token) not in self.nodes:
                self.nodes[parent, token] = len(self.tokens)
                self.tokens.append(token)
                self.positions.append(self.n_prefix + len(path))
            parent = self.nodes[parent, token]
            path.append(parent)
        self.members.append((index, [self.n_prefix - 1, *path], continuation))

    def new_tokens(self, continuation):
        """How many tokens add(continuation) would append."""
        parent = -1
        for n, token in enumerate(continuation[:-1]):
            if (parent, token) not in self.nodes:
                return len(continuation) - 1 - n
            parent = self.nodes[parent, token]
        return 0

    def subtree_ends(self):
        """Per offset, the last offset a query may have to see it: a tree token is seen by its own subtree
        only, a prefix token by everything after it."""
        ends, stack = [len(self.tokens)] * len(self.tokens), []
        for offset in range(self.n_prefix, len(self.tokens)):
            while stack and self.positions[stack[-1]] >= self.positions[offset]:  # left that subtree
                ends[stack.pop()] = offset - 1
            stack.append(offset)
        for offset in stack:
            ends[offset] = len(self.tokens) - 1
        return ends


def pack_requests(pairs, block_size):
    """Rows for (context tokens, continuation tokens) pairs. Each request keeps the last block_size + 1 tokens
    of context + continuation (truncated from the left, as HFLM does); requests with the same resulting prefix
    share a row, while the row stays within max(block_size, prefix + one continuation) tokens."""
    groups = {}
    for i, (context, continuation) in enumerate(pairs):
        if not 0 < len(continuation) <= block_size:
            raise UserError(
                f"a continuation of {len(continuation)} tokens cannot be scored with a block of "
                f"{block_size}; evaluate a model with a longer context"
            )
        window = (context + continuation)[-(block_size + 1) :]
        groups.setdefault(tuple(window[: len(window) - len(continuation)]), []).append((i, continuation))
    rows = []
    for prefix, members in groups.items():
        row = None
        for i, continuation in sorted(members, key=lambda m: m[1][:-1]):  # sorted inputs: a preorder tree
            budget = max(block_size, len(prefix) + len(continuation))
            if row is None or len(row.tokens) + row.new_tokens(continuation) > budget:
                row = Row(prefix)
                rows.append(row)
            row.add(i, continuation)
    return rows


def batch_tensors(rows, device):
    """Right-padded (idx, pos, mask) for rows. mask[b, q, k]: k <= q and q within k's reach (subtree_ends), so
    every token sees the prefix causally and a tree token also its own ancestors; padding sees only the
    prefix."""
    T = max(len(r.tokens) for r in rows)
    idx = torch.zeros(len(rows), T, dtype=torch.long)
    pos = torch.zeros(len(rows), T, dtype=torch.long)
    ends = torch.full((len(rows), T), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.tokens)
        idx[b, :n] = torch.tensor(r.tokens)
        pos[b, :n] = torch.tensor(r.positions)
        ends[b, :n] = torch.tensor(r.subtree_ends())
        ends[b, : r.n_prefix] = T  # prefix tokens are seen by all later tokens, padding included
    q = torch.arange(T)[:, None]
    mask = (torch.arange(T)[None, :] <= q) & (q <= ends[:, None, :])
    return idx.to(device), pos.to(device), mask.to(device)


# ------------------------------------------------------------------------------------ lm-eval model


class InherituneLM(TemplateLM or object):
    """lm-eval's model interface over an in-memory GPT and a tokenizer.load_tokenizer tokenizer.

    batch_size: sequences per forward pass, as in HFLM; a loglikelihood sequence holds every continuation of
    one context (HFLM: one request, or all one-token continuations of a context), a perplexity one a window.
    Loglikelihoods condition an empty context on the tokenizer's document separator (eot_id), what the model
    saw before every document in training; generation stops at EOS, at a stop sequence or after max_gen_toks.
    """

    def __init__(self, model, tokenizer, batch_size=8, max_gen_toks=256):
        super().__init__()
        self.model, self.tok = model.eval(), tokenizer
        self.batch_size, self.max_gen_toks = int(batch_size), max_gen_toks
        self._device = next(model.parameters()).device
        self.max_length = model.config.block_size
        # a context is encoded once, not once per answer choice; bounded, since few-shot prompts are long
        self.encode_cached = functools.lru_cache(maxsize=4096)(self.tok.encode)

    @property
    def eot_token_id(self):
        return self.tok.eos_id if self.tok.eos_id is not None else self.tok.eot_id

    @property
    def prefix_token_id(self):
        return self.tok.eot_id

    @property
    def tokenizer_name(self):
        return self.tok.name

    def get_model_info(self):
        return {
            "model_num_parameters": self.model.num_params(),
            "model_dtype": str(self.model.lm_head.weight.dtype),
            "tokenizer": self.tok.name,
            "block_size": self.max_length,
        }

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        """Plain-text ids, with BOS in front when the tokenizer prepends one (as the model saw in
        training)."""
        ids = self.encode_cached(string)
        return (
            [self.tok.bos_id, *ids] if self.tok.prepend_bos and add_special_tokens is not False else list(ids)
        )

    @torch.inference_mode()
    def _loglikelihood_tokens(self, requests, disable_tqdm=False):
        """(sum of log p(continuation | context), whether greedy decoding gives the continuation) per
        request."""
        pairs = [(context, continuation) for _, context, continuation in requests]
        if cut := sum(len(c) + len(x) > self.max_length + 1 for c, x in pairs):
            log.warning(
                f"{cut} of {len(pairs)} requests are longer than the block of {self.max_length} tokens: "
                f"their contexts are cut from the left"
            )
        rows = pack_requests(pairs, self.max_length)
        rows.sort(key=lambda r: -len(r.tokens))  # similar lengths together: little padding
        results = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm)
        for first in range(0, len(rows), self.batch_size):
            batch = rows[first : first + self.batch_size]
            hidden = self.model.hidden_states(*batch_tensors(batch, self.device))
            members = [(b, *m) for b, row in enumerate(batch) for m in row.members]
            flat = torch.tensor([b * hidden.size(1) + o for b, _, offsets, _ in members for o in offsets])
            targets = torch.tensor(
                [t for *_, continuation in members for t in continuation], device=self.device
            )
            scored, which = flat.unique(return_inverse=True)  # a shared position goes through the head once
            logp = head_log_probs(self.model, hidden.flatten(0, 1)[scored.to(self.device)])
            which = which.to(self.device)
            token_logp = logp[which, targets].tolist()
            hits = (logp.argmax(dim=-1)[which] == targets).tolist()
            start = 0
            for _, i, offsets, _ in members:
                end = start + len(offsets)
                results[i] = (sum(token_logp[start:end]), all(hits[start:end]))
                start = end
            bar.update(len(members))
        bar.close()
        for (request, _, _), result in zip(requests, results):
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        """Total log-likelihood of each text, scored in windows of the block size (each token predicted
        once)."""
        windows, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            ids = self.tok_encode(text, add_special_tokens=False)
            pieces = get_rolling_token_windows(ids, self.prefix_token_id, self.max_length, context_len=1)
            for context, continuation in map(make_disjoint_window, pieces):
                windows.append((None, context, continuation))
                owner.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for i, (logp, _) in zip(owner, scores):
            totals[i] += logp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    @torch.inference_mode()
    def generate_until(self, requests, disable_tqdm=False):
        """Greedy continuations, batched by equal generation settings and sorted by context length."""
        results = [None] * len(requests)
        by_settings = {}
        for i, req in enumerate(requests):
            by_settings.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        eos_text = self.tok.decode([self.eot_token_id])
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm)
        for indices in by_settings.values():
            kwargs = normalize_gen_kwargs(requests[indices[0]].args[1], self.max_gen_toks)
            if kwargs.get("do_sample"):
                raise UserError(
                    f"task {requests[indices[0]].task_name} asks for sampling; eval.py decodes greedily"
                )
            until = handle_stop_sequences(kwargs["until"], eos=eos_text)
            max_new = kwargs["max_gen_toks"]
            if max_new >= self.max_length:
                raise UserError(
                    f"max_gen_toks={max_new} leaves no room for a context in a block of {self.max_length}"
                )
            keep = self.max_length - max_new  # the context's last tokens, leaving room to generate (as HFLM)
            contexts = {
                i: (self.tok_encode(requests[i].args[0]) or [self.prefix_token_id])[-keep:] for i in indices
            }
            order = sorted(indices, key=lambda i: -len(contexts[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                for i, text in zip(chunk, self.greedy([contexts[i] for i in chunk], max_new, until)):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(chunk))
        bar.close()
        return results

    def greedy(self, contexts, max_new, until):
        """Greedy decoding for a batch of contexts, without a KV cache: each step is one forward over
        right-padded rows (causal attention keeps padding out of every real token's view); a row stops at EOS
        or a stop string."""
        outputs = [[] for _ in contexts]
        active = list(range(len(contexts)))
        stops = [s for s in until if s]
        for _ in range(max_new):
            seqs = [contexts[i] + outputs[i] for i in active]
            hidden = self.model.hidden_states(*batch_tensors([Row(s) for s in seqs], self.device))
            last = hidden[torch.arange(len(seqs)), torch.tensor([len(s) - 1 for s in seqs])]
            next_ids = head_log_probs(self.model, last).argmax(dim=-1).tolist()
            still = []
            for i, token in zip(active, next_ids):
                if token == self.eot_token_id:
                    continue
                outputs[i].append(token)
                if not any(s in self.tok.decode(outputs[i]) for s in stops):
                    still.append(i)
            active = still
            if not active:
                break
        return [postprocess_generated_text(self.tok.decode(out), until, None) for out in outputs]
