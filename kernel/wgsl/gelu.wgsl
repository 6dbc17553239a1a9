// In place: h = gelu(h) = x/2 · (1 + erf(x/√2)), the exact (erf) GELU of BERT, not the tanh
// approximation. Dispatch: 256 invocations per workgroup over (x, y) workgroups with
// x · y · 256 >= n; y > 1 only where n needs more than 65535 workgroups in x.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;

// erfc with relative error under 1.2e-7 (Numerical Recipes' erfcc, a Chebyshev fit). WGSL has
// no erf; erfc keeps the relative accuracy of gelu where x is large and negative.
fn erfc(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(-z * z + poly);
    return select(2.0 - r, r, x >= 0.0);
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * erfc(-x * 0.70710678118654752);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 256u;
    if (i < p.n) {
        h[i] = gelu(h[i]);
    }
}
