#!/usr/bin/env python3
"""The engine's MoE layer against a PyTorch eager peer on the same weights and tokens.

usage: moe_peer.py ENGINE_BENCH [--dir out/engine_peer] [--rounds 15] [--warmup 2]
                   [--threads 1] [--tokens 512]

Starts `ENGINE_BENCH --serve DIR`, which writes the layer's weights, one step's
tokens, the engine's output and its expert choices to DIR (peer.json + peer.bin)
and then runs one engine step per "step" line on its stdin. The peer is the MoE
block as Hugging Face writes Mixtral's and DeepSeek's (a loop over experts,
index_select of the expert's tokens, SwiGLU through three nn.Linear layers,
index_add_ of the gated result) plus the shared experts, RMSNorm and residual,
in torch eager mode with torch.set_num_threads(threads). Rounds alternate which
side runs first; figures are medians of each round's own ratio. Prints one JSON
document on stdout; progress on stderr.

Equal outputs: both sides compute the layer in fp32 from the same fp32 weights,
only in a different order (OpenBLAS vs the engine's kernels, different GEMM
blocking), so they agree to fp32 rounding of K-term dot products:
relative error ~ 1e-7 * sqrt(K) per GEMM, K <= 1408 here, a few 1e-6 after
three GEMMs. The check allows a normwise relative error of 1e-4 on the MoE
output (layer output minus the residual) and requires the same experts for
every token.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def load(directory):
    import numpy as np
    with open(os.path.join(directory, 'peer.json')) as f:
        header = json.load(f)
    raw = np.memmap(os.path.join(directory, 'peer.bin'), dtype=np.uint8, mode='r')
    tensors = {}
    for name, t in header['tensors'].items():
        count = 1
        for d in t['shape']:
            count *= d
        dtype = np.float32 if t['dtype'] == 'float32' else np.int32
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=t['offset'])
        tensors[name] = np.array(arr.reshape(t['shape']))
    return header, tensors


def build_peer(header, t, torch):
    nn = torch.nn
    F = torch.nn.functional
    hidden, experts = header['hidden'], header['num_experts']
    ffn, shared_ffn, top_k = header['expert_ffn'], header['shared_ffn_total'], header['top_k']
    eps = header['rms_eps']

    class Mlp(nn.Module):
        """DeepseekV2MLP / MixtralBlockSparseTop2MLP: down(silu(gate(x)) * up(x))."""

        def __init__(self, gate_up, down, inter):
            super().__init__()
            self.gate_proj = nn.Linear(hidden, inter, bias=False)
            self.up_proj = nn.Linear(hidden, inter, bias=False)
            self.down_proj = nn.Linear(inter, hidden, bias=False)
            with torch.no_grad():  # nn.Linear holds [out, in]
                gu = torch.from_numpy(gate_up)
                self.gate_proj.weight.copy_(gu[:, :inter].t())
                self.up_proj.weight.copy_(gu[:, inter:].t())
                self.down_proj.weight.copy_(torch.from_numpy(down).t())

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class MoeLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm_weight = nn.Parameter(torch.from_numpy(t['norm']))
            self.gate = nn.Linear(hidden, experts, bias=False)
            with torch.no_grad():
                self.gate.weight.copy_(torch.from_numpy(t['gate']).t())
            self.experts = nn.ModuleList(
                Mlp(t[f'gate_up.{e}'], t[f'down.{e}'], ffn) for e in range(experts))
            self.shared_experts = Mlp(t['shared_gate_up'], t['shared_down'], shared_ffn)

        def forward(self, hidden_states):
            residual = hidden_states
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            x = hidden_states * torch.rsqrt(variance + eps) * self.norm_weight
            router_logits = self.gate(x)
            routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
            routing_weights, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
            final = torch.zeros_like(x)
            expert_mask = F.one_hot(selected_experts, num_classes=experts).permute(2, 1, 0)
            for e in range(experts):
                idx, top_x = torch.where(expert_mask[e])
                if top_x.numel() == 0:
                    continue
                current = x.index_select(0, top_x)
                current = self.experts[e](current) * routing_weights[top_x, idx, None]
                final.index_add_(0, top_x, current.to(x.dtype))
            final = final + self.shared_experts(x)
            return residual + final, selected_experts

    return MoeLayer().eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('engine_bench')
    ap.add_argument('--dir', default='out/engine_peer')
    ap.add_argument('--rounds', type=int, default=15)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--tokens', type=int, default=512)
    args = ap.parse_args()
    os.environ['OMP_NUM_THREADS'] = str(args.threads)
    os.environ['OPENBLAS_NUM_THREADS'] = str(args.threads)
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    os.makedirs(args.dir, exist_ok=True)
    cmd = [args.engine_bench, '--serve', args.dir, '--threads', str(args.threads), '--tokens',
           str(args.tokens)]
    eng = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if eng.stdout.readline().strip() != 'ready':
            print('moe_peer: engine_bench did not start', file=sys.stderr)
            return 1
        header, t = load(args.dir)
        peer = build_peer(header, t, torch)
        x = torch.from_numpy(t['input'])
        with torch.no_grad():
            out, chosen = peer(x)
        out = out.numpy()
        # Same experts per token (as sets: ties and order may differ).
        engine_sets = [set(r) for r in t['chosen'].tolist()]
        peer_sets = [set(r) for r in chosen.numpy().tolist()]
        differing = sum(1 for a, b in zip(engine_sets, peer_sets) if a != b)
        moe_engine = t['output'].astype(np.float64) - t['input']
        moe_peer = out.astype(np.float64) - t['input']
        rel = float(np.linalg.norm(moe_engine - moe_peer) / np.linalg.norm(moe_peer))
        max_abs = float(np.max(np.abs(t['output'] - out)))
        tolerance = 1e-4
        equal = differing == 0 and rel <= tolerance
        print(f'moe_peer: outputs relative error {rel:.3g}, max abs {max_abs:.3g}, '
              f'{differing} tokens with other experts', file=sys.stderr)

        def engine_step():
            eng.stdin.write('step\n')
            eng.stdin.flush()
            return json.loads(eng.stdout.readline())['seconds']

        def peer_step():
            start = time.perf_counter()
            with torch.no_grad():
                peer(x)
            return time.perf_counter() - start

        ratios, engine_s, peer_s = [], [], []
        for r in range(args.warmup + args.rounds):
            if r % 2 == 0:
                e, p = engine_step(), peer_step()
            else:
                p, e = peer_step(), engine_step()
            if r < args.warmup:
                continue
            engine_s.append(e)
            peer_s.append(p)
            ratios.append(p / e)
            print(f'round {r - args.warmup}: engine {e * 1e3:.1f} ms, peer {p * 1e3:.1f} ms, '
                  f'ratio {p / e:.2f}', file=sys.stderr)
        eng.stdin.write('quit\n')
        eng.stdin.flush()
        eng.wait(timeout=60)
    finally:
        if eng.poll() is None:
            eng.kill()
    tokens = header['tokens']
    ratio = statistics.median(ratios)
    doc = {
        'command': 'bench/moe_peer.py ' + ' '.join(sys.argv[1:]),
        'engine_command': ' '.join(cmd),
        'summary': {
            'engine_tokens_per_s': tokens / statistics.median(engine_s),
            'peer_tokens_per_s': tokens / statistics.median(peer_s),
            'engine_vs_peer_tokens_per_s': ratio,
            'outputs_equal': equal,
            'output_relative_error': rel,
            'output_max_abs_difference': max_abs,
            'output_tolerance': tolerance,
            'tokens_with_other_experts': differing,
        },
        'peer': {
            'what': 'Hugging Face style eager MoE block (loop over experts, index_select, '
                    'SwiGLU via nn.Linear, index_add_) + shared experts, RMSNorm, residual',
            'torch': torch.__version__,
            'threads': torch.get_num_threads(),
            'blas': torch.__config__.show().split('BLAS_INFO=')[-1].split(',')[0]
            if 'BLAS_INFO=' in torch.__config__.show() else 'unknown',
        },
        'model': {k: header[k] for k in ('hidden', 'num_experts', 'expert_ffn',
                                         'shared_ffn_total', 'top_k', 'tokens')},
        'engine_backend': header['backend'],
        'rounds': args.rounds,
        'method': 'rounds alternate which side runs first; the engine times one Step() in '
                  'process, the peer one forward under torch.no_grad(); medians of per-round '
                  'ratios',
        'goals': {'engine_vs_peer_min': 1.5, 'engine_vs_peer_met': ratio >= 1.5 and equal},
    }
    print(json.dumps(doc, indent=2))
    return 0 if equal else 1


if __name__ == '__main__':
    sys.exit(main())
