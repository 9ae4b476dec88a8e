// napari-focus: ATen binding of the CUDA deformable-attention kernels in
// msda_cuda_kernel.cu. Registered as torch.ops.napari_focus_cuda.ms_deform_attn.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "msda_cuda_kernel.cuh"

namespace {

using napari_focus_msda::DType;

DType to_kernel_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      TORCH_CHECK(false,
                  "napari-focus CUDA deformable attention supports float32, "
                  "float64, float16 and bfloat16 values, got ", type);
  }
}

at::Tensor ms_deform_attn_cuda(const at::Tensor& value,
                               const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index,
                               const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights) {
  TORCH_CHECK(value.is_cuda(), "napari-focus CUDA deformable attention needs CUDA tensors");
  TORCH_CHECK(sampling_locations.device() == value.device() &&
                  attention_weights.device() == value.device(),
              "value, sampling_locations and attention_weights must be on one device");
  TORCH_CHECK(value.dim() == 4, "value must be (B, S, M, D)");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be (B, Q, M, L, P, 2)");
  const int64_t batch = value.size(0), spatial = value.size(1);
  const int64_t heads = value.size(2), dim = value.size(3);
  const int64_t queries = sampling_locations.size(1);
  const int64_t levels = sampling_locations.size(3);
  const int64_t points = sampling_locations.size(4);
  TORCH_CHECK(sampling_locations.size(0) == batch && sampling_locations.size(2) == heads,
              "sampling_locations batch/heads do not match value");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must be (B, Q, M, L, P)");
  TORCH_CHECK(spatial_shapes.numel() == 2 * levels && level_start_index.numel() == levels,
              "spatial_shapes must be (L, 2) and level_start_index (L,)");
  // Out-of-range levels would read outside `value`, and an illegal address
  // kills the CUDA context of the whole process: refuse them up front (a
  // host copy of 3 L integers).
  {
    const auto shapes_host = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
    const auto starts_host = level_start_index.to(at::kCPU, at::kLong).contiguous();
    const int64_t* shp = shapes_host.data_ptr<int64_t>();
    const int64_t* st = starts_host.data_ptr<int64_t>();
    for (int64_t l = 0; l < levels; ++l) {
      TORCH_CHECK(shp[2 * l] > 0 && shp[2 * l + 1] > 0 && st[l] >= 0 &&
                      st[l] + shp[2 * l] * shp[2 * l + 1] <= spatial,
                  "level ", l, " (", shp[2 * l], "x", shp[2 * l + 1],
                  " starting at ", st[l], ") does not fit in ", spatial,
                  " value tokens");
    }
  }

  const c10::cuda::CUDAGuard guard(value.device());
  const DType dtype = to_kernel_dtype(value.scalar_type());
  const auto acc_type = dtype == DType::kFloat64 ? at::kDouble : at::kFloat;
  const auto v = value.contiguous();
  const auto shapes = spatial_shapes.to(value.device(), at::kLong).contiguous();
  const auto starts = level_start_index.to(value.device(), at::kLong).contiguous();
  const auto loc = sampling_locations.to(acc_type).contiguous();
  const auto attn = attention_weights.to(acc_type).contiguous();

  auto out = at::empty({batch, queries, heads * dim}, v.options());
  const cudaError_t err = napari_focus_msda::ms_deform_attn_forward(
      dtype, v.data_ptr(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
      loc.data_ptr(), attn.data_ptr(), out.data_ptr(), batch, spatial, heads, dim,
      queries, levels, points, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "napari-focus CUDA deformable attention failed: ",
              cudaGetErrorString(err));
  return out;
}

}  // namespace

TORCH_LIBRARY(napari_focus_cuda, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor "
      "level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> Tensor");
  m.impl("ms_deform_attn", c10::DispatchKey::CUDA, &ms_deform_attn_cuda);
}
