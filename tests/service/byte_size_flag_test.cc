#include "server/byte_size_flag.h"

#include <string>

#include "gtest/gtest.h"

namespace hisa {
namespace {

int64_t Parse(const std::string& text) {
  ByteSize size;
  std::string error;
  EXPECT_TRUE(AbslParseFlag(text, &size, &error)) << text << ": " << error;
  return size.bytes;
}

bool Rejects(const std::string& text) {
  ByteSize size;
  std::string error;
  const bool ok = AbslParseFlag(text, &size, &error);
  if (!ok) {
    EXPECT_FALSE(error.empty());
  }
  return !ok;
}

TEST(ByteSizeFlagTest, ParsesBinaryUnits) {
  EXPECT_EQ(Parse("0"), 0);
  EXPECT_EQ(Parse("1048576"), 1048576);
  EXPECT_EQ(Parse("100B"), 100);
  EXPECT_EQ(Parse("64k"), 64 << 10);
  EXPECT_EQ(Parse("512M"), int64_t{512} << 20);
  EXPECT_EQ(Parse("8G"), int64_t{8} << 30);
  EXPECT_EQ(Parse("8GB"), int64_t{8} << 30);
  EXPECT_EQ(Parse("8GiB"), int64_t{8} << 30);
  EXPECT_EQ(Parse(" 2T "), int64_t{2} << 40);
  EXPECT_EQ(Parse("1.5G"), int64_t{3} << 29);
}

TEST(ByteSizeFlagTest, RejectsGarbage) {
  EXPECT_TRUE(Rejects(""));
  EXPECT_TRUE(Rejects("abc"));
  EXPECT_TRUE(Rejects("8X"));
  EXPECT_TRUE(Rejects("8Gx"));
  EXPECT_TRUE(Rejects("-1"));
  EXPECT_TRUE(Rejects("1.2.3M"));
  EXPECT_TRUE(Rejects("99999999T"));
}

TEST(ByteSizeFlagTest, UnparsesToTheLargestExactUnit) {
  EXPECT_EQ(AbslUnparseFlag(ByteSize{int64_t{8} << 30}), "8G");
  EXPECT_EQ(AbslUnparseFlag(ByteSize{int64_t{1536} << 20}), "1536M");
  EXPECT_EQ(AbslUnparseFlag(ByteSize{1000}), "1000");
  EXPECT_EQ(AbslUnparseFlag(ByteSize{0}), "0");
  EXPECT_EQ(Parse(AbslUnparseFlag(ByteSize{int64_t{3} << 40})), int64_t{3} << 40);
}

}  // namespace
}  // namespace hisa
