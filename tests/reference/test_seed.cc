#include "tests/reference/test_seed.h"

#include <cstdio>
#include <cstdlib>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace hisa::ref {

uint64_t TestSeed() {
  static const uint64_t seed = [] {
    uint64_t value = 0;
    const char* env = std::getenv("HISA_TEST_SEED");
    if (env == nullptr || !absl::SimpleAtoi(env, &value)) {
      std::random_device device;
      value = (uint64_t{device()} << 32) ^ device();
    }
    std::fprintf(stderr, "HISA_TEST_SEED=%llu\n",
                 static_cast<unsigned long long>(value));
    return value;
  }();
  return seed;
}

std::string SeedNote() { return absl::StrCat("HISA_TEST_SEED=", TestSeed()); }

}  // namespace hisa::ref
