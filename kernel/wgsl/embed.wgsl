// BERT's embeddings before their LayerNorm: y[row] = word[ids[row]] + position[row % tokens]
// + token_type[types[row]], for rows = batch · tokens padded token ids, positions 0, 1, ...
// within each sequence. Dispatch: (ceil(hidden / 64), rows, 1).

struct Params {
    rows: u32,
    tokens: u32,
    hidden: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> types: array<u32>;
@group(0) @binding(3) var<storage, read> word: array<f32>;
@group(0) @binding(4) var<storage, read> position: array<f32>;
@group(0) @binding(5) var<storage, read> token_type: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let d = g.x;
    let row = g.y;
    if (d >= p.hidden || row >= p.rows) {
        return;
    }
    let h = p.hidden;
    y[row * h + d] = word[ids[row] * h + d] + position[(row % p.tokens) * h + d]
        + token_type[types[row] * h + d];
}
