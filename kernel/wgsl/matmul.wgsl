// y = x · wᵀ + bias, torch's nn.Linear: x is (m, k), w is (n, k), y is (m, n), all row-major
// f32. A workgroup computes a 32×64 tile of y and each invocation a 4×4 block of it, stepping
// through k in slices of 16 staged in workgroup memory.
// Dispatch: (ceil(n / 64), ceil(m / 32), 1).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const ROWS: u32 = 32u;
const COLS: u32 = 64u;
const SLICE: u32 = 16u;

// Slices stored [k][row], so that an invocation reads its 4 rows (or columns) as one vec4.
var<workgroup> xs: array<vec4<f32>, 128>;  // SLICE * ROWS / 4
var<workgroup> ws: array<vec4<f32>, 256>;  // SLICE * COLS / 4

fn load_x(row: u32, kk: u32) -> f32 {
    if (row < p.m && kk < p.k) {
        return x[row * p.k + kk];
    }
    return 0.0;
}

fn load_w(row: u32, kk: u32) -> f32 {
    if (row < p.n && kk < p.k) {
        return w[row * p.k + kk];
    }
    return 0.0;
}

@compute @workgroup_size(16, 8)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * ROWS;
    let col0 = wg.x * COLS;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += SLICE) {
        // 128 invocations stage 512 + 1024 elements, consecutive ones reading along k.
        for (var i = 0u; i < 8u; i++) {
            let e = li + i * 128u;
            let r = e / SLICE;
            let c = e % SLICE;
            if (i < 4u) {
                xs[(c * ROWS + r) / 4u][r % 4u] = load_x(row0 + r, k0 + c);
            }
            ws[(c * COLS + r) / 4u][r % 4u] = load_w(col0 + r, k0 + c);
        }
        workgroupBarrier();
        for (var c = 0u; c < SLICE; c++) {
            let a = xs[c * (ROWS / 4u) + lid.y];
            let b = ws[c * (COLS / 4u) + lid.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    let block = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x * 4u + j;
            if (r < p.m && c < p.n) {
                y[r * p.n + c] = block[i][j] + bias[c];
            }
        }
    }
}
