// Sentence embeddings from last hidden states: the mean over the tokens where mask is 1, then
// L2-normalized (sentence-transformers' mean pooling and Normalize). h is
// (batch · tokens, hidden), mask (batch · tokens, u32), out (batch, hidden).
// Dispatch: (batch, 1, 1).

struct Params {
    tokens: u32,
    hidden: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const THREADS: u32 = 128u;
var<workgroup> partial: array<f32, THREADS>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let seq = wg.x * p.tokens;
    var count = 0.0;
    for (var t = 0u; t < p.tokens; t++) {
        count += f32(mask[seq + t] != 0u);
    }
    let scale = 1.0 / max(count, 1e-9);
    var squares = 0.0;
    for (var d = li; d < p.hidden; d += THREADS) {
        var s = 0.0;
        for (var t = 0u; t < p.tokens; t++) {
            if (mask[seq + t] != 0u) {
                s += h[(seq + t) * p.hidden + d];
            }
        }
        s *= scale;
        out[wg.x * p.hidden + d] = s;
        squares += s * s;
    }

    partial[li] = squares;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / max(sqrt(partial[0]), 1e-12);
    for (var d = li; d < p.hidden; d += THREADS) {
        out[wg.x * p.hidden + d] *= inv;
    }
}
