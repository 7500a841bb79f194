// A fixed-size, 64-byte aligned heap array that never moves or grows: the
// unit of storage for key pages, summary pages and per-call scratch of the
// CPU backend.
//
//   hisa::cpu::AlignedBuffer<float> buf;
//   if (!buf.Allocate(n)) return absl::ResourceExhaustedError(...);
//   float* p = buf.data();          // p % 64 == 0, p[0..n) == 0
//
// Allocate(n, zero) returns false (and leaves the buffer empty) when memory
// is short instead of throwing; with zero = false the contents are left
// uninitialized (for pages that are always written before they are read).
// size_bytes() is the size requested, rounded up to a multiple of 64.
#ifndef HISA_KERNELS_CPU_ALIGNED_BUFFER_H_
#define HISA_KERNELS_CPU_ALIGNED_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

namespace hisa::cpu {

inline constexpr size_t kBufferAlignment = 64;

inline constexpr int64_t RoundUp(int64_t x, int64_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

template <typename T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "plain data only");

 public:
  AlignedBuffer() = default;

  // Replaces the contents with `count` elements, zeroed when `zero`. False
  // when the allocation fails; the buffer is then empty.
  bool Allocate(int64_t count, bool zero = true) {
    data_.reset();
    size_bytes_ = 0;
    if (count <= 0) return true;
    const int64_t bytes =
        RoundUp(count * static_cast<int64_t>(sizeof(T)), kBufferAlignment);
    void* p = std::aligned_alloc(kBufferAlignment, static_cast<size_t>(bytes));
    if (p == nullptr) return false;
    if (zero) std::memset(p, 0, static_cast<size_t>(bytes));
    data_.reset(static_cast<T*>(p));
    size_bytes_ = bytes;
    return true;
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  int64_t size_bytes() const { return size_bytes_; }
  bool empty() const { return data_ == nullptr; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  int64_t size_bytes_ = 0;
};

}  // namespace hisa::cpu

#endif  // HISA_KERNELS_CPU_ALIGNED_BUFFER_H_
