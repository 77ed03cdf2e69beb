// Runs every kernel of kernels/*.cu on the CPU emulator (cuda_emu.h) against f64 references, with
// the launch geometry the Rust side uses. It checks the kernels' logic (indexing, masks, online
// softmax, reductions, tie rules) on a machine without a GPU; the GPU tests
// (crates/kosmos-tensor/tests/cuda_*.rs) check the real thing. Build and run: kernels/emu/run.sh.
#include "cuda_emu.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../activation.cu"
#include "../attention.cu"
#include "../convert.cu"
#include "../embedding.cu"
#include "../layernorm.cu"
#include "../sampling.cu"
#include "../softmax.cu"

static int failures = 0;
static int checks = 0;

static std::vector<float> rnd(uint64_t seed, size_t n, float scale) {
    std::vector<float> v(n);
    uint64_t s = seed * 0x2545F4914F6CDD1DULL + 1;
    for (auto& x : v) {
        s += 0x9E3779B97F4A7C15ULL;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        x = ((float)(z >> 40) / (float)(1ULL << 24) * 2.0f - 1.0f) * scale;
    }
    return v;
}

/// ||got - want|| / ||want|| <= tol (NaN in one but not the other fails).
static void check(const std::string& what, const std::vector<float>& got,
                  const std::vector<double>& want, double tol) {
    ++checks;
    double num = 0, den = 0;
    bool nan_mismatch = got.size() != want.size();
    for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
        if (std::isnan(got[i]) != std::isnan(want[i])) nan_mismatch = true;
        if (std::isnan(got[i]) || std::isnan(want[i])) continue;
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    const double err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    if (nan_mismatch || !(err <= tol)) {
        ++failures;
        std::printf("FAIL %-60s rel err %.3e (tol %.1e)%s\n", what.c_str(), err, tol,
                    nan_mismatch ? " NaN/size mismatch" : "");
    }
}

static unsigned row_threads(size_t cols) {
    size_t want = (cols + 7) / 8, p = 1;
    while (p < want) p <<= 1;
    return (unsigned)std::clamp<size_t>(p, 32, 1024);
}

static dim3 elems_grid(size_t n) { return dim3{(unsigned)std::clamp<size_t>((n + 255) / 256, 1, 1 << 20), 1, 1}; }

template <typename T>
static std::vector<T> to_t(const std::vector<float>& v) {
    std::vector<T> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = from_f32<T>(v[i]);
    return o;
}
template <typename T>
static std::vector<float> from_t(const std::vector<T>& v) {
    std::vector<float> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = to_f32(v[i]);
    return o;
}
template <typename T>
static std::vector<double> rounded(const std::vector<float>& v) {
    std::vector<double> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = to_f32(from_f32<T>(v[i]));
    return o;
}
template <typename T>
static double tol_of() {
    if (sizeof(T) == 4) return 3e-6;
    return std::is_same<T, bf16_t>::value ? 1e-2 : 2e-3;
}

// ---- layernorm.cu --------------------------------------------------------------------------------

template <typename T>
static void test_norms(void (*ln)(const T*, const T*, const T*, T*, int, float),
                       void (*aln)(const T*, const T*, const T*, const T*, T*, T*, int, float),
                       void (*l2)(const T*, T*, int, float), const char* name) {
    for (auto [rows, cols] : {std::pair{3, 1}, {4, 33}, {2, 2048}}) {
        auto x = rnd(1, rows * cols, 3), r = rnd(2, rows * cols, 1), w = rnd(3, cols, 1.5),
             b = rnd(4, cols, 0.5);
        auto xt = to_t<T>(x), rt = to_t<T>(r), wt = to_t<T>(w), bt = to_t<T>(b);
        auto xd = rounded<T>(x), rd = rounded<T>(r), wd = rounded<T>(w), bd = rounded<T>(b);
        std::vector<T> y(rows * cols, from_f32<T>(NAN)), s(rows * cols, from_f32<T>(NAN));
        emu_launch(dim3{(unsigned)rows}, row_threads(cols),
                   [&] { ln(xt.data(), wt.data(), bt.data(), y.data(), cols, 1e-5f); });
        std::vector<double> want(rows * cols), want_sum(rows * cols), want_l2(rows * cols);
        for (int i = 0; i < rows; ++i) {
            auto norm = [&](const std::vector<double>& v, std::vector<double>& out) {
                double m = 0, q = 0;
                for (int j = 0; j < cols; ++j) m += v[i * cols + j];
                m /= cols;
                for (int j = 0; j < cols; ++j) q += (v[i * cols + j] - m) * (v[i * cols + j] - m);
                q /= cols;
                for (int j = 0; j < cols; ++j)
                    out[i * cols + j] = (v[i * cols + j] - m) / std::sqrt(q + 1e-5) * wd[j] + bd[j];
            };
            norm(xd, want);
            double n2 = 0;
            for (int j = 0; j < cols; ++j) n2 += xd[i * cols + j] * xd[i * cols + j];
            for (int j = 0; j < cols; ++j)
                want_l2[i * cols + j] = xd[i * cols + j] / std::max(std::sqrt(n2), 1e-12);
        }
        check(std::string("layer_norm_") + name + " " + std::to_string(cols), from_t(y), want,
              tol_of<T>());
        std::vector<double> sumd(rows * cols);
        for (size_t i = 0; i < sumd.size(); ++i)
            sumd[i] = to_f32(from_f32<T>((float)(xd[i] + rd[i])));
        emu_launch(dim3{(unsigned)rows}, row_threads(cols), [&] {
            aln(xt.data(), rt.data(), wt.data(), bt.data(), s.data(), y.data(), cols, 1e-5f);
        });
        for (int i = 0; i < rows; ++i) {
            double m = 0, q = 0;
            for (int j = 0; j < cols; ++j) m += sumd[i * cols + j];
            m /= cols;
            for (int j = 0; j < cols; ++j) q += (sumd[i * cols + j] - m) * (sumd[i * cols + j] - m);
            q /= cols;
            for (int j = 0; j < cols; ++j)
                want[i * cols + j] = (sumd[i * cols + j] - m) / std::sqrt(q + 1e-5) * wd[j] + bd[j];
        }
        check(std::string("add_layer_norm sum ") + name, from_t(s), sumd, 1e-7);
        check(std::string("add_layer_norm ") + name, from_t(y), want, tol_of<T>());
        emu_launch(dim3{(unsigned)rows}, row_threads(cols),
                   [&] { l2(xt.data(), y.data(), cols, 1e-12f); });
        check(std::string("l2_normalize ") + name, from_t(y), want_l2, tol_of<T>());
    }
}

// ---- softmax.cu ----------------------------------------------------------------------------------

static void test_softmax() {
    for (auto [rows, cols] : {std::pair{3, 1}, {4, 77}, {2, 5000}}) {
        auto x = rnd(5, rows * cols, 8);
        if (cols > 1) {
            for (int j = 0; j < cols; ++j) x[j] = -INFINITY;
            x[cols] = -INFINITY;
        }
        std::vector<float> y(rows * cols, NAN), ly(rows * cols, NAN);
        emu_launch(dim3{(unsigned)rows}, row_threads(cols), [&] { softmax_f32(x.data(), y.data(), cols); });
        emu_launch(dim3{(unsigned)rows}, row_threads(cols), [&] { log_softmax_f32(x.data(), ly.data(), cols); });
        std::vector<double> want(rows * cols), lwant(rows * cols);
        for (int i = 0; i < rows; ++i) {
            double m = -INFINITY;
            for (int j = 0; j < cols; ++j) m = std::max(m, (double)x[i * cols + j]);
            double s = 0;
            for (int j = 0; j < cols; ++j) s += m == -INFINITY ? 0 : std::exp(x[i * cols + j] - m);
            for (int j = 0; j < cols; ++j) {
                want[i * cols + j] = m == -INFINITY ? 0 : std::exp(x[i * cols + j] - m) / s;
                lwant[i * cols + j] = m == -INFINITY ? x[i * cols + j] : x[i * cols + j] - m - std::log(s);
            }
        }
        check("softmax " + std::to_string(cols), y, want, 3e-6);
        for (size_t i = 0; i < ly.size(); ++i)
            if (std::isinf(lwant[i])) lwant[i] = 0, ly[i] = std::isinf(ly[i]) ? 0 : NAN;
        check("log_softmax " + std::to_string(cols), ly, lwant, 3e-6);
    }
    // scale_mask_softmax with a per-batch causal+pad mask.
    const int B = 2, H = 3, Q = 5, K = 9;
    auto x = rnd(6, B * H * Q * K, 4);
    std::vector<float> mask(B * Q * K);
    for (int b = 0; b < B; ++b)
        for (int q = 0; q < Q; ++q)
            for (int k = 0; k < K; ++k)
                mask[(b * Q + q) * K + k] = (k > q + (K - Q) ? KOSMOS_NEG_MIN : 0.f) +
                                            (b == 1 && k < 2 ? KOSMOS_NEG_MIN : 0.f);
    std::vector<float> y(x.size(), NAN);
    emu_launch(dim3{(unsigned)(B * H * Q)}, row_threads(K), [&] {
        scale_mask_softmax_f32(x.data(), y.data(), mask.data(), K, 0.37f, Q, H * Q, (long long)Q * K);
    });
    std::vector<double> want(x.size());
    for (int r = 0; r < B * H * Q; ++r) {
        const int b = r / (H * Q), q = r % Q;
        std::vector<float> s(K);
        float m = -INFINITY;
        for (int k = 0; k < K; ++k) {
            s[k] = x[r * K + k] * 0.37f + mask[(b * Q + q) * K + k];
            m = std::max(m, s[k]);
        }
        double z = 0;
        for (int k = 0; k < K; ++k) z += std::exp((double)s[k] - m);
        for (int k = 0; k < K; ++k) want[r * K + k] = std::exp((double)s[k] - m) / z;
    }
    check("scale_mask_softmax", y, want, 3e-6);
}

// ---- activation.cu / convert.cu ------------------------------------------------------------------

static void test_elementwise() {
    const int rows = 9, cols = 130, n = rows * cols;
    auto x = rnd(7, n, 6), bias = rnd(8, cols, 1), r = rnd(9, n, 2);
    std::vector<float> y(n, NAN);
    std::vector<double> want(n);
    emu_launch(elems_grid(n), 256, [&] { gelu_erf_f32(x.data(), y.data(), n); });
    for (int i = 0; i < n; ++i) want[i] = 0.5 * x[i] * (1 + std::erf(x[i] / std::sqrt(2.0)));
    check("gelu_erf", y, want, 3e-6);
    emu_launch(elems_grid(n), 256, [&] { quick_gelu_f32(x.data(), y.data(), n); });
    for (int i = 0; i < n; ++i) want[i] = x[i] / (1 + std::exp(-1.702 * x[i]));
    check("quick_gelu", y, want, 3e-6);
    for (int act = 0; act < 3; ++act) {
        std::vector<float> z = x;
        emu_launch(elems_grid(n), 256, [&] { bias_act_f32(z.data(), bias.data(), z.data(), n, cols, act); });
        for (int i = 0; i < n; ++i) {
            const double v = (double)x[i] + bias[i % cols];
            want[i] = act == 0 ? v : act == 1 ? 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))) : v / (1 + std::exp(-1.702 * v));
        }
        check("bias_act " + std::to_string(act), z, want, 3e-6);
    }
    std::vector<float> res = r;
    emu_launch(elems_grid(n), 256, [&] { bias_residual_f32(x.data(), bias.data(), res.data(), res.data(), n, cols); });
    for (int i = 0; i < n; ++i) want[i] = (double)r[i] + x[i] + bias[i % cols];
    check("bias_residual", res, want, 3e-7);
    emu_launch(elems_grid(n), 256, [&] { add_f32(x.data(), bias.data(), y.data(), n, cols); });
    for (int i = 0; i < n; ++i) want[i] = (double)x[i] + bias[i % cols];
    check("add", y, want, 3e-7);
    emu_launch(elems_grid(n), 256, [&] { mul_f32(x.data(), bias.data(), y.data(), n, cols); });
    for (int i = 0; i < n; ++i) want[i] = (double)x[i] * bias[i % cols];
    check("mul", y, want, 3e-7);
    emu_launch(elems_grid(n), 256, [&] { scale_f32(x.data(), y.data(), n, 45.254833f); });
    for (int i = 0; i < n; ++i) want[i] = (float)(x[i] * 45.254833f);
    check("scale", y, want, 0);

    // convert: bf16 round trip of f32, exact vs the host rounding.
    std::vector<bf16_t> hb(n);
    emu_launch(elems_grid(n), 256, [&] { convert_f32_bf16(x.data(), hb.data(), n); });
    emu_launch(elems_grid(n), 256, [&] { convert_bf16_f32(hb.data(), y.data(), n); });
    check("convert f32->bf16->f32", y, rounded<bf16_t>(x), 0);
    // copy_strided: [2,3,4] viewed as its transpose [4,3,2].
    std::vector<float> src(24), dst(24, NAN);
    for (int i = 0; i < 24; ++i) src[i] = (float)i;
    StridedLayout l{};
    l.rank = 3;
    long long dims[3] = {4, 3, 2}, strides[3] = {1, 4, 12};
    for (int i = 0; i < 3; ++i) l.dims[i] = dims[i], l.strides[i] = strides[i];
    emu_launch(elems_grid(24), 256, [&] { copy_strided_f32(src.data(), dst.data(), 24, l); });
    std::vector<double> tw;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 2; ++k) tw.push_back(k * 12 + j * 4 + i);
    check("copy_strided transpose", dst, tw, 0);
}

// ---- attention.cu --------------------------------------------------------------------------------

/// f64 softmax over scores computed the way the kernel does (f32 score, f32 mask adds).
static std::vector<double> ref_attention(const std::vector<float>& q, const std::vector<float>& k,
                                         const std::vector<float>& v, const float* mask, int mask_b,
                                         bool causal, int B, int H, int Q, int K, int D, int kv_len) {
    std::vector<double> out((size_t)B * H * Q * D);
    const float scale = 1.0f / std::sqrt((float)D);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int i = 0; i < Q; ++i) {
                std::vector<float> s(kv_len);
                float m = -INFINITY;
                for (int j = 0; j < kv_len; ++j) {
                    double dot = 0;  // bthd layouts
                    for (int d = 0; d < D; ++d)
                        dot += (double)q[((size_t)(b * Q + i) * H + h) * D + d] * k[((size_t)(b * K + j) * H + h) * D + d];
                    float sv = (float)dot * scale;
                    if (mask) sv += mask[((size_t)(mask_b > 1 ? b : 0) * Q + i) * kv_len + j];
                    if (causal && j > i + (kv_len - Q)) sv += KOSMOS_NEG_MIN;
                    s[j] = sv;
                    m = std::max(m, sv);
                }
                double z = 0;
                for (int j = 0; j < kv_len; ++j) z += m == -INFINITY ? 0 : std::exp((double)s[j] - m);
                for (int d = 0; d < D; ++d) {
                    double a = 0;
                    for (int j = 0; j < kv_len; ++j)
                        a += (m == -INFINITY ? 0 : std::exp((double)s[j] - m)) * v[((size_t)(b * K + j) * H + h) * D + d];
                    out[(((size_t)b * H + h) * Q + i) * D + d] = z > 0 ? a / z : 0;
                }
            }
    return out;
}

static void test_flash() {
    struct Case { int B, H, Q, K, D; };
    int seed = 100;
    for (Case c : {Case{2, 3, 37, 37, 64}, {1, 2, 16, 16, 8}, {2, 2, 33, 33, 16}, {1, 1, 5, 40, 128}, {1, 2, 70, 70, 80}}) {
        for (int variant = 0; variant < 5; ++variant) {
            seed += 3;
            const int B = c.B, H = c.H, Q = c.Q, K = c.K, D = c.D;
            auto q = rnd(seed, (size_t)B * Q * H * D, 1), k = rnd(seed + 1, (size_t)B * K * H * D, 1),
                 v = rnd(seed + 2, (size_t)B * K * H * D, 1);
            // variant: 0 none, 1 causal flag, 2 pad mask, 3 pad+causal mask, 4 pad mask + causal flag
            const bool causal_flag = variant == 1 || variant == 4;
            std::vector<float> mask;
            if (variant >= 2) {
                mask.assign((size_t)B * Q * K, 0.f);
                for (int b = 0; b < B; ++b)
                    for (int i = 0; i < Q; ++i)
                        for (int j = 0; j < K; ++j)
                            mask[((size_t)b * Q + i) * K + j] =
                                (variant == 3 && j > i + (K - Q) ? KOSMOS_NEG_MIN : 0.f) +
                                (b == 1 && j < 3 ? KOSMOS_NEG_MIN : 0.f);
            }
            std::vector<float> o((size_t)B * H * Q * D, NAN);
            AttnParams p{};
            p.q_sb = (long long)Q * H * D, p.q_sh = D, p.q_st = (long long)H * D;
            p.k_sb = (long long)K * H * D, p.k_sh = D, p.k_st = (long long)H * D;
            p.v_sb = p.k_sb, p.v_sh = D, p.v_st = (long long)H * D;
            p.o_sb = (long long)H * Q * D, p.o_sh = (long long)Q * D, p.o_st = D;
            p.mask_sb = (long long)Q * K, p.mask_sq = K;
            p.batch = B, p.heads = H, p.q_len = Q, p.kv_len = K, p.head_dim = D;
            p.causal = causal_flag, p.causal_offset = K - Q, p.scale = 1.0f / std::sqrt((float)D);
            const float* mp = mask.empty() ? nullptr : mask.data();
            emu_launch(dim3{(unsigned)((Q + 15) / 16), (unsigned)H, (unsigned)B}, 128,
                       [&] { flash_attn_f32(q.data(), k.data(), v.data(), o.data(), mp, p); });
            auto want = ref_attention(q, k, v, mp, B, causal_flag, B, H, Q, K, D, K);
            char what[128];
            std::snprintf(what, sizeof what, "flash B%d H%d Q%d K%d D%d variant %d", B, H, Q, K, D, variant);
            check(what, o, want, 3e-6);
        }
    }
}

static void test_decode_and_append() {
    const int B = 3, H = 4, CAP = 50, LEN = 37;
    for (int D : {8, 64, 128}) {
        for (int variant = 0; variant < 2; ++variant) {
            auto q = rnd(200, (size_t)B * H * D, 1), kc = rnd(201, (size_t)B * H * CAP * D, 1),
                 vc = rnd(202, (size_t)B * H * CAP * D, 1);
            std::vector<float> mask((size_t)B * CAP, 0.f);
            for (int j = 0; j < 2; ++j) mask[1 * CAP + j] = KOSMOS_NEG_MIN;
            for (int j = 0; j < 5; ++j) mask[2 * CAP + j] = KOSMOS_NEG_MIN;
            int counter = LEN - 1;
            AttnParams p{};
            p.q_sb = (long long)H * D, p.q_sh = D, p.q_st = D;
            p.k_sb = (long long)H * CAP * D, p.k_sh = (long long)CAP * D, p.k_st = D;
            p.v_sb = p.k_sb, p.v_sh = p.k_sh, p.v_st = D;
            p.o_sb = (long long)H * D, p.o_sh = D, p.o_st = D;
            p.mask_sb = CAP;
            p.batch = B, p.heads = H, p.q_len = 1, p.kv_len = variant ? CAP : LEN, p.head_dim = D;
            p.scale = 1.0f / std::sqrt((float)D);
            std::vector<float> o((size_t)B * H * D, NAN);
            const float* mp = variant ? mask.data() : nullptr;
            const int* cp = variant ? &counter : nullptr;
            emu_launch(dim3{(unsigned)H, (unsigned)B}, 128,
                       [&] { decode_attn_f32(q.data(), kc.data(), vc.data(), o.data(), mp, cp, 1, p); });
            // Reference in bthd terms: q [B,1,H,D]; k from the bhtd cache.
            std::vector<float> kt((size_t)B * LEN * H * D), vt(kt.size()), m2((size_t)B * LEN);
            for (int b = 0; b < B; ++b)
                for (int h = 0; h < H; ++h)
                    for (int j = 0; j < LEN; ++j)
                        for (int d = 0; d < D; ++d) {
                            kt[((size_t)(b * LEN + j) * H + h) * D + d] = kc[(((size_t)b * H + h) * CAP + j) * D + d];
                            vt[((size_t)(b * LEN + j) * H + h) * D + d] = vc[(((size_t)b * H + h) * CAP + j) * D + d];
                        }
            for (int b = 0; b < B; ++b)
                for (int j = 0; j < LEN; ++j) m2[(size_t)b * LEN + j] = mask[(size_t)b * CAP + j];
            auto want = ref_attention(q, kt, vt, variant ? m2.data() : nullptr, B, false, B, H, 1, LEN, D, LEN);
            check("decode D" + std::to_string(D) + " variant " + std::to_string(variant), o, want, 3e-6);
        }
    }
    // kv_append at a device position: [B, T, H, D] into a [B, H, CAP, D] cache at 6.
    const int T = 4, D = 8;
    auto src = rnd(300, (size_t)B * T * H * D, 1);
    std::vector<float> cache((size_t)B * H * 10 * D, -7.f);
    int pos = 6;
    emu_launch(dim3{(unsigned)T, (unsigned)H, (unsigned)B}, 32, [&] {
        kv_append_f32(src.data(), (long long)T * H * D, D, (long long)H * D, cache.data(),
                      (long long)H * 10 * D, 10LL * D, D, D, 0, &pos);
    });
    std::vector<double> want(cache.size(), -7.0);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int t = 0; t < T; ++t)
                for (int d = 0; d < D; ++d)
                    want[(((size_t)b * H + h) * 10 + 6 + t) * D + d] = src[((size_t)(b * T + t) * H + h) * D + d];
    check("kv_append", cache, want, 0);
}

// ---- embedding.cu / sampling.cu ------------------------------------------------------------------

static void test_embed() {
    const int vocab = 50, dim = 2048, n = 8;
    auto table = rnd(400, (size_t)vocab * dim, 0.05f), image = rnd(401, 4 * (size_t)dim, 1);
    unsigned ids[n] = {0, 5, 1, 1, 49, 7, 3, 2};
    int positions[n] = {2, 3, 4, 5, 1, 2, 3, 4};
    int image_row[n] = {-1, 0, 1, -1, -1, 2, 3, -1};
    const int half = dim / 2;
    std::vector<float> freqs(half);
    const double step = std::log(10000.0) / (half - 1);
    for (int j = 0; j < half; ++j) freqs[j] = (float)std::exp((double)((float)j * (float)(-step)));
    const float scale = std::sqrt((float)dim);
    std::vector<float> out((size_t)n * dim, NAN);
    emu_launch(dim3{n}, 256, [&] {
        embed_tokens_f32(ids, table.data(), image.data(), image_row, positions, nullptr, 0, freqs.data(),
                         out.data(), dim, scale, 1);
    });
    std::vector<double> want((size_t)n * dim);
    for (int t = 0; t < n; ++t)
        for (int d = 0; d < dim; ++d) {
            const float e = image_row[t] >= 0 ? image[(size_t)image_row[t] * dim + d] : table[(size_t)ids[t] * dim + d];
            float pe = 0;
            if (positions[t] != 1) {
                const int j = d < half ? d : d - half;
                const float arg = (float)positions[t] * freqs[j];
                pe = d < half ? (float)std::sin((double)arg) : (float)std::cos((double)arg);
            }
            want[(size_t)t * dim + d] = e * scale + pe;
        }
    check("embed_tokens", out, want, 0);
    // Sinusoid check values of row 2 (token 0 at position 2).
    const float expect[4] = {0.9092974f, 0.91661066f, 0.92356777f, 0.930175f};
    for (int d = 0; d < 4; ++d) {
        ++checks;
        if (std::abs(out[d] - table[d] * scale - expect[d]) > 1e-6f) {
            ++failures;
            std::printf("FAIL sinusoid check value %d\n", d);
        }
    }
}

static void test_sampling() {
    const int cols = 1000, rows = 5;
    auto x = rnd(500, (size_t)rows * cols, 10);
    x[3] = 50, x[700] = 50;              // row 0: tie -> 3
    x[cols + 10] = NAN;                  // row 1: NaN ranks first
    for (int j = 0; j < cols; ++j) x[2 * cols + j] = -0.0f;
    x[2 * cols + 5] = 0.0f;              // row 2: -0 == +0 -> 0
    for (int j = 0; j < cols; ++j) x[3 * cols + j] = -INFINITY;  // row 3 -> 0
    x[4 * cols + 999] = INFINITY;        // row 4 -> 999
    std::vector<unsigned> am(rows, 12345);
    emu_launch(dim3{rows}, row_threads(cols), [&] { argmax_f32(x.data(), am.data(), cols); });
    const unsigned expect[rows] = {3, 10, 0, 0, 999};
    for (int r = 0; r < rows; ++r) {
        ++checks;
        if (am[r] != expect[r]) {
            ++failures;
            std::printf("FAIL argmax row %d: %u vs %u\n", r, am[r], expect[r]);
        }
    }
    const int K = 64;
    std::vector<unsigned> ti((size_t)rows * K);
    std::vector<float> tv((size_t)rows * K);
    emu_launch(dim3{rows}, row_threads(cols), [&] { top_k_f32(x.data(), ti.data(), tv.data(), cols, K); });
    for (int r = 0; r < rows; ++r) {
        std::vector<unsigned> idx(cols);
        for (int j = 0; j < cols; ++j) idx[j] = j;
        auto key = [&](unsigned j) { return order_key(x[(size_t)r * cols + j]); };
        std::stable_sort(idx.begin(), idx.end(), [&](unsigned a, unsigned b) { return key(a) > key(b); });
        ++checks;
        if (!std::equal(idx.begin(), idx.begin() + K, ti.begin() + (size_t)r * K)) {
            ++failures;
            std::printf("FAIL top_k row %d\n", r);
        }
    }
    // Sampling histogram: identical rows, uniform grid of draws.
    const int N = 2000, C = 10, k = 3;
    const float base[C] = {2, 1, 0, -1, -9, -9, -9, -9, -9, 5};
    std::vector<float> sx((size_t)N * C), u(N);
    for (int i = 0; i < N; ++i) {
        for (int j = 0; j < C; ++j) sx[(size_t)i * C + j] = base[j];
        u[i] = (i + 0.5f) / N;
    }
    std::vector<unsigned> ids(N, 777);
    emu_launch(dim3{N}, 32, [&] { sample_top_k_f32(sx.data(), u.data(), ids.data(), C, k, 0.5f, 1.0f); });
    const double z = std::exp(10.0) + std::exp(4.0) + std::exp(2.0);
    const unsigned cand[3] = {9, 0, 1};
    const double p[3] = {std::exp(10.0) / z, std::exp(4.0) / z, std::exp(2.0) / z};
    for (int c = 0; c < 3; ++c) {
        const double share = (double)std::count(ids.begin(), ids.end(), cand[c]) / N;
        ++checks;
        if (std::abs(share - p[c]) > 2.0 / N) {
            ++failures;
            std::printf("FAIL sample share of %u: %f vs %f\n", cand[c], share, p[c]);
        }
    }
    int counter = 4;
    emu_launch(dim3{1}, 32, [&] { counter_add(&counter, 3); });
    ++checks;
    if (counter != 7) ++failures, std::printf("FAIL counter_add\n");
}

int main() {
    test_norms<float>(layer_norm_f32, add_layer_norm_f32, l2_normalize_f32, "f32");
    test_norms<bf16_t>(layer_norm_bf16, add_layer_norm_bf16, l2_normalize_bf16, "bf16");
    test_norms<f16_t>(layer_norm_f16, add_layer_norm_f16, l2_normalize_f16, "f16");
    test_softmax();
    test_elementwise();
    test_flash();
    test_decode_and_append();
    test_embed();
    test_sampling();
    std::printf("kernels/emu: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
