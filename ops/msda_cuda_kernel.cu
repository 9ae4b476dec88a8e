// napari-focus: multi-scale deformable attention forward kernels (CUDA).
// Torch-free; see msda_cuda_kernel.cuh for the layout of every buffer.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "msda_cuda_kernel.cuh"

namespace napari_focus_msda {
namespace {

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T from_acc(typename Acc<T>::type x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// One thread per output element (b, q, m, d). Neighbouring threads share
// (b, q, m) and differ in d, so the corner reads of a warp are coalesced and
// its reads of the sampling locations are broadcasts.
template <typename T>
__global__ void forward_kernel(const T* __restrict__ value,
                               const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const typename Acc<T>::type* __restrict__ locations,
                               const typename Acc<T>::type* __restrict__ weights,
                               T* __restrict__ out, int64_t total,
                               int64_t spatial, int64_t heads, int64_t dim,
                               int64_t queries, int64_t levels,
                               int64_t points) {
  using A = typename Acc<T>::type;
  const int64_t token_stride = heads * dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % dim;
    const int64_t head_row = i / dim;  // (b * queries + q) * heads + m
    const int64_t m = head_row % heads;
    const int64_t b = head_row / heads / queries;
    const T* value_bm = value + b * spatial * token_stride + m * dim + d;
    const A* a = weights + head_row * levels * points;
    const A* xy = locations + head_row * levels * points * 2;
    A acc = 0;
    for (int64_t l = 0; l < levels; ++l) {
      const int64_t h = shapes[2 * l];
      const int64_t w = shapes[2 * l + 1];
      const T* value_l = value_bm + starts[l] * token_stride;
      for (int64_t p = 0; p < points; ++p, ++a, xy += 2) {
        const A x = xy[0] * static_cast<A>(w) - A(0.5);
        const A y = xy[1] * static_cast<A>(h) - A(0.5);
        if (!(x > A(-1) && y > A(-1) && x < static_cast<A>(w) &&
              y < static_cast<A>(h))) {
          continue;
        }
        const A xf = floor(x), yf = floor(y);
        const int64_t x0 = static_cast<int64_t>(xf);
        const int64_t y0 = static_cast<int64_t>(yf);
        const A fx = x - xf, fy = y - yf;
        const A aw = *a;
        A sample = 0;
        if (y0 >= 0) {
          const T* row = value_l + y0 * w * token_stride;
          if (x0 >= 0) sample += (A(1) - fy) * (A(1) - fx) * to_acc(row[x0 * token_stride]);
          if (x0 + 1 < w) sample += (A(1) - fy) * fx * to_acc(row[(x0 + 1) * token_stride]);
        }
        if (y0 + 1 < h) {
          const T* row = value_l + (y0 + 1) * w * token_stride;
          if (x0 >= 0) sample += fy * (A(1) - fx) * to_acc(row[x0 * token_stride]);
          if (x0 + 1 < w) sample += fy * fx * to_acc(row[(x0 + 1) * token_stride]);
        }
        acc += aw * sample;
      }
    }
#ifdef NAPARI_FOCUS_MSDA_FAULT
    // Deliberately wrong results, only in builds made with this macro (see
    // msda_cpu.cpp): proves that the self-check catches a wrong kernel.
    acc = acc * A(1.01) + A(0.01);
#endif
    out[i] = from_acc<T>(acc);
  }
}

template <typename T>
cudaError_t launch(const void* value, const int64_t* shapes,
                   const int64_t* starts, const void* locations,
                   const void* weights, void* out, int64_t batch,
                   int64_t spatial, int64_t heads, int64_t dim,
                   int64_t queries, int64_t levels, int64_t points,
                   cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const int64_t total = batch * queries * heads * dim;
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks =
      std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t{1} << 30);
  forward_kernel<T><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(value), shapes, starts,
      static_cast<const A*>(locations), static_cast<const A*>(weights),
      static_cast<T*>(out), total, spatial, heads, dim, queries, levels,
      points);
  return cudaGetLastError();
}

}  // namespace

cudaError_t ms_deform_attn_forward(DType dtype, const void* value,
                                   const int64_t* spatial_shapes,
                                   const int64_t* level_start_index,
                                   const void* sampling_locations,
                                   const void* attention_weights, void* out,
                                   int64_t batch, int64_t spatial,
                                   int64_t heads, int64_t dim, int64_t queries,
                                   int64_t levels, int64_t points,
                                   cudaStream_t stream) {
#define NAPARI_FOCUS_MSDA_LAUNCH(T)                                           \
  launch<T>(value, spatial_shapes, level_start_index, sampling_locations,     \
            attention_weights, out, batch, spatial, heads, dim, queries,      \
            levels, points, stream)
  switch (dtype) {
    case DType::kFloat32: return NAPARI_FOCUS_MSDA_LAUNCH(float);
    case DType::kFloat64: return NAPARI_FOCUS_MSDA_LAUNCH(double);
    case DType::kFloat16: return NAPARI_FOCUS_MSDA_LAUNCH(__half);
    case DType::kBFloat16: return NAPARI_FOCUS_MSDA_LAUNCH(__nv_bfloat16);
  }
#undef NAPARI_FOCUS_MSDA_LAUNCH
  return cudaErrorInvalidValue;
}

}  // namespace napari_focus_msda
