// napari-focus: argument checks shared by the CPU and CUDA deformable-attention
// bindings (msda_cpu.cpp, msda_cuda.cpp). Host code only.

#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace napari_focus_msda {

struct MsdaSizes {
  int64_t batch, spatial, heads, dim, queries, levels, points;
};

// The sizes of one call, after checking that the tensors fit together:
// value (B, S, M, D), sampling_locations (B, Q, M, L, P, 2),
// attention_weights (B, Q, M, L, P), spatial_shapes (L, 2), level_start_index (L,).
inline MsdaSizes check_msda_arguments(const at::Tensor& value,
                                      const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "value must be (B, S, M, D)");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be (B, Q, M, L, P, 2)");
  const MsdaSizes n{value.size(0), value.size(1), value.size(2), value.size(3),
                    sampling_locations.size(1), sampling_locations.size(3),
                    sampling_locations.size(4)};
  TORCH_CHECK(sampling_locations.size(0) == n.batch && sampling_locations.size(2) == n.heads,
              "sampling_locations batch/heads do not match value");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must be (B, Q, M, L, P)");
  TORCH_CHECK(spatial_shapes.numel() == 2 * n.levels && level_start_index.numel() == n.levels,
              "spatial_shapes must be (L, 2) and level_start_index (L,)");
  return n;
}

// Out-of-range levels would read outside `value` (on a GPU, an illegal address
// kills the CUDA context of the whole process): refuse them up front. `shapes`
// and `starts` are int64 host arrays of 2 L and L values.
inline void check_levels_fit(const int64_t* shp, const int64_t* st, const MsdaSizes& n) {
  for (int64_t l = 0; l < n.levels; ++l) {
    TORCH_CHECK(shp[2 * l] > 0 && shp[2 * l + 1] > 0 && st[l] >= 0 &&
                    st[l] + shp[2 * l] * shp[2 * l + 1] <= n.spatial,
                "level ", l, " (", shp[2 * l], "x", shp[2 * l + 1], " starting at ", st[l],
                ") does not fit in ", n.spatial, " value tokens");
  }
}

}  // namespace napari_focus_msda
