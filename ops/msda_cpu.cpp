// napari-focus: multi-scale deformable attention forward on the CPU.
//
// value (B, S, M, D) with D contiguous; sampling_locations (B, Q, M, L, P, 2)
// as normalised (x, y); attention_weights (B, Q, M, L, P); output (B, Q, M*D).
// Bilinear sampling with zero padding, pixel centres at (i + 0.5) / size as in
// grid_sample(align_corners=False).
//
// Registered as torch.ops.napari_focus_cpu.ms_deform_attn (no pybind11, so the
// library does not depend on the Python ABI).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "msda_checks.h"

namespace {

// out[d] += w00 * v00[d] + ... over the head dimension; kDim > 0 fixes the
// width at compile time so the loop unrolls into whole vector registers.
template <typename scalar_t, int kDim>
inline void accumulate_corners(scalar_t* __restrict__ out, int64_t dim_rt,
                               const scalar_t* __restrict__ v00,
                               const scalar_t* __restrict__ v01,
                               const scalar_t* __restrict__ v10,
                               const scalar_t* __restrict__ v11, scalar_t w00,
                               scalar_t w01, scalar_t w10, scalar_t w11) {
  const int64_t dim = kDim > 0 ? kDim : dim_rt;
#pragma omp simd
  for (int64_t d = 0; d < dim; ++d) {
    out[d] += w00 * v00[d] + w01 * v01[d] + w10 * v10[d] + w11 * v11[d];
  }
}

template <typename scalar_t, int kDim>
void forward_kernel(const scalar_t* value, const int64_t* shapes,
                    const int64_t* starts, const scalar_t* locations,
                    const scalar_t* weights, scalar_t* out, int64_t batch,
                    int64_t spatial, int64_t heads, int64_t dim_rt,
                    int64_t queries, int64_t levels, int64_t points) {
  const int64_t dim = kDim > 0 ? kDim : dim_rt;
  const int64_t token_stride = heads * dim;
  const int64_t work_per_query =
      std::max<int64_t>(1, heads * levels * points * dim);
  const int64_t grain = std::max<int64_t>(1, 32768 / work_per_query);
  const scalar_t zero(0), one(1), half(0.5);

  at::parallel_for(0, batch * queries, grain, [&](int64_t begin, int64_t end) {
    for (int64_t bq = begin; bq < end; ++bq) {
      const scalar_t* value_b = value + (bq / queries) * spatial * token_stride;
      for (int64_t m = 0; m < heads; ++m) {
        const int64_t head_row = bq * heads + m;
        scalar_t* o = out + head_row * dim;
        std::fill(o, o + dim, zero);
        const scalar_t* a = weights + head_row * levels * points;
        const scalar_t* xy = locations + head_row * levels * points * 2;
        for (int64_t l = 0; l < levels; ++l) {
          const int64_t h = shapes[2 * l];
          const int64_t w = shapes[2 * l + 1];
          const scalar_t hf = static_cast<scalar_t>(h);
          const scalar_t wf = static_cast<scalar_t>(w);
          const scalar_t* value_l = value_b + starts[l] * token_stride + m * dim;
          for (int64_t p = 0; p < points; ++p, ++a, xy += 2) {
            const scalar_t x = xy[0] * wf - half;
            const scalar_t y = xy[1] * hf - half;
            // Also rejects NaN, and keeps floor() away from huge values.
            if (!(x > -one && y > -one && x < wf && y < hf)) continue;
            const scalar_t xf = std::floor(x);
            const scalar_t yf = std::floor(y);
            const int64_t x0 = static_cast<int64_t>(xf);
            const int64_t y0 = static_cast<int64_t>(yf);
            const scalar_t fx = x - xf;
            const scalar_t fy = y - yf;
            // A corner outside the map gets weight zero and a clamped (valid)
            // address, so every point runs the same branch-free channel loop.
            const bool x0_in = x0 >= 0, x1_in = x0 + 1 < w;
            const bool y0_in = y0 >= 0, y1_in = y0 + 1 < h;
            const int64_t xa = x0_in ? x0 : 0, xb = x1_in ? x0 + 1 : w - 1;
            const int64_t ya = y0_in ? y0 : 0, yb = y1_in ? y0 + 1 : h - 1;
            const scalar_t wy0 = y0_in ? (one - fy) * *a : zero;
            const scalar_t wy1 = y1_in ? fy * *a : zero;
            const scalar_t wx0 = x0_in ? one - fx : zero;
            const scalar_t wx1 = x1_in ? fx : zero;
            accumulate_corners<scalar_t, kDim>(
                o, dim, value_l + (ya * w + xa) * token_stride,
                value_l + (ya * w + xb) * token_stride,
                value_l + (yb * w + xa) * token_stride,
                value_l + (yb * w + xb) * token_stride, wy0 * wx0, wy0 * wx1,
                wy1 * wx0, wy1 * wx1);
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void forward_dispatch_dim(const scalar_t* value, const int64_t* shapes,
                          const int64_t* starts, const scalar_t* locations,
                          const scalar_t* weights, scalar_t* out, int64_t batch,
                          int64_t spatial, int64_t heads, int64_t dim,
                          int64_t queries, int64_t levels, int64_t points) {
#define NAPARI_FOCUS_MSDA_CPU(D)                                              \
  forward_kernel<scalar_t, D>(value, shapes, starts, locations, weights, out, \
                              batch, spatial, heads, dim, queries, levels,   \
                              points)
  switch (dim) {
    case 16: NAPARI_FOCUS_MSDA_CPU(16); break;
    case 32: NAPARI_FOCUS_MSDA_CPU(32); break;
    case 64: NAPARI_FOCUS_MSDA_CPU(64); break;
    default: NAPARI_FOCUS_MSDA_CPU(0); break;
  }
#undef NAPARI_FOCUS_MSDA_CPU
}

at::Tensor ms_deform_attn_cpu(const at::Tensor& value,
                              const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights) {
  TORCH_CHECK(value.device().is_cpu() && sampling_locations.device().is_cpu() &&
                  attention_weights.device().is_cpu(),
              "napari-focus CPU deformable attention needs CPU tensors");
  TORCH_CHECK(value.scalar_type() == at::kFloat ||
                  value.scalar_type() == at::kDouble,
              "napari-focus CPU deformable attention supports float32 and "
              "float64 values, got ", value.scalar_type());
  const auto n = napari_focus_msda::check_msda_arguments(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const int64_t batch = n.batch, spatial = n.spatial, heads = n.heads, dim = n.dim;
  const int64_t queries = n.queries, levels = n.levels, points = n.points;

  const auto v = value.contiguous();
  const auto shapes = spatial_shapes.to(at::kLong).contiguous();
  const auto starts = level_start_index.to(at::kLong).contiguous();
  const auto loc = sampling_locations.to(v.scalar_type()).contiguous();
  const auto attn = attention_weights.to(v.scalar_type()).contiguous();
  const int64_t* shp = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  napari_focus_msda::check_levels_fit(shp, st, n);

  auto out = at::empty({batch, queries, heads * dim}, v.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "napari_focus_msda_cpu", [&] {
    forward_dispatch_dim<scalar_t>(
        v.data_ptr<scalar_t>(), shp, st, loc.data_ptr<scalar_t>(),
        attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch, spatial,
        heads, dim, queries, levels, points);
#ifdef NAPARI_FOCUS_MSDA_FAULT
    // Deliberately wrong results, only in builds made with this macro
    // (NAPARI_FOCUS_KERNEL_CFLAGS=-DNAPARI_FOCUS_MSDA_FAULT): the tests use it
    // to prove that the self-check catches a kernel that computes wrongly.
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < out.numel(); ++i) o[i] = o[i] * scalar_t(1.01) + scalar_t(0.01);
#endif
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(napari_focus_cpu, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor "
      "level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> Tensor");
  m.impl("ms_deform_attn", c10::DispatchKey::CPU, &ms_deform_attn_cpu);
}
