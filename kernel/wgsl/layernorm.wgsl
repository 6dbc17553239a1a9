// y = LayerNorm(x) · gamma + beta over the last dimension, one workgroup per row. With the
// override RESIDUAL = true it normalizes x + r instead (BERT's post-norm residual); without,
// r is never read and any buffer may be bound there (x itself will do).
// Dispatch: (rows, 1, 1).

override RESIDUAL: bool = false;

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> r: array<f32>;

const THREADS: u32 = 128u;
var<workgroup> partial: array<f32, THREADS>;

fn total(value: f32, li: u32) -> f32 {
    partial[li] = value;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    let sum = partial[0];
    workgroupBarrier();  // everyone has read partial[0] before it is written again
    return sum;
}

// Two passes (mean, then the mean of squared deviations), as torch computes it in f32.
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wg.x;
    let base = row * p.dim;
    var s = 0.0;
    for (var i = li; i < p.dim; i += THREADS) {
        var v = x[base + i];
        if (RESIDUAL) {
            v += r[base + i];
        }
        y[base + i] = v;
        s += v;
    }
    let mean = total(s, li) / f32(p.dim);
    var q = 0.0;
    for (var i = li; i < p.dim; i += THREADS) {
        let d = y[base + i] - mean;
        q += d * d;
    }
    let inv = inverseSqrt(total(q, li) / f32(p.dim) + p.eps);
    for (var i = li; i < p.dim; i += THREADS) {
        y[base + i] = (y[base + i] - mean) * inv * gamma[i] + beta[i];
    }
}

