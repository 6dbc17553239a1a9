// Multi-head scaled dot-product attention, softmax(q·kᵀ · scale + mask) · v, for one query
// token of one head of one sequence per workgroup. qkv is (batch · tokens, 3 · hidden) with q,
// k and v side by side and head h in columns h · head_dim ..; out is (batch · tokens, hidden).
// mask (batch · tokens, u32) is the attention mask: keys where it is 0 get -inf added, as
// BERT's additive mask does, so they weigh nothing. tokens <= 512.
// Dispatch: (tokens, heads, batch).

struct Params {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const THREADS: u32 = 64u;
const MAX_TOKENS: u32 = 512u;
const MAX_HEAD_DIM: u32 = 256u;

var<workgroup> scores: array<f32, MAX_TOKENS>;
var<workgroup> query: array<f32, MAX_HEAD_DIM>;
var<workgroup> partial: array<f32, THREADS>;

fn reduce_max(value: f32, li: u32) -> f32 {
    partial[li] = value;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            partial[li] = max(partial[li], partial[li + stride]);
        }
        workgroupBarrier();
    }
    let result = partial[0];
    workgroupBarrier();
    return result;
}

fn reduce_sum(value: f32, li: u32) -> f32 {
    partial[li] = value;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    let result = partial[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let hidden = p.heads * p.head_dim;
    let stride = 3u * hidden;
    let seq = wg.z * p.tokens;  // first row of this sequence
    let col = wg.y * p.head_dim;
    for (var d = li; d < p.head_dim; d += THREADS) {
        query[d] = qkv[(seq + wg.x) * stride + col + d];
    }
    workgroupBarrier();

    var best = -3.4e38;
    for (var j = li; j < p.tokens; j += THREADS) {
        let key = (seq + j) * stride + hidden + col;
        var s = 0.0;
        for (var d = 0u; d < p.head_dim; d++) {
            s = fma(query[d], qkv[key + d], s);
        }
        s *= p.scale;
        scores[j] = s;
        if (mask[seq + j] != 0u) {
            best = max(best, s);
        }
    }
    let top = reduce_max(best, li);

    var sum = 0.0;
    for (var j = li; j < p.tokens; j += THREADS) {
        var e = 0.0;
        if (mask[seq + j] != 0u) {
            e = exp(scores[j] - top);
        }
        scores[j] = e;
        sum += e;
    }
    let total = reduce_sum(sum, li);  // also the barrier before scores are read back
    let inv = select(0.0, 1.0 / total, total > 0.0);  // 0, not NaN, for a sequence all masked

    for (var d = li; d < p.head_dim; d += THREADS) {
        let value = 2u * hidden + col + d;
        var o = 0.0;
        for (var j = 0u; j < p.tokens; j++) {
            o = fma(scores[j], qkv[(seq + j) * stride + value], o);
        }
        out[(seq + wg.x) * hidden + col + d] = o * inv;
    }
}
