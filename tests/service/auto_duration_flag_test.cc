#include "server/auto_duration_flag.h"

#include <string>

#include "gtest/gtest.h"

namespace hisa {
namespace {

TEST(AutoDurationFlagTest, ParsesAutoAndDurations) {
  AutoDuration d;
  std::string error;
  d.value = absl::Seconds(1);
  ASSERT_TRUE(AbslParseFlag("auto", &d, &error)) << error;
  EXPECT_FALSE(d.value.has_value());
  ASSERT_TRUE(AbslParseFlag("500us", &d, &error)) << error;
  EXPECT_EQ(d.value, absl::Microseconds(500));
  ASSERT_TRUE(AbslParseFlag("0", &d, &error)) << error;
  EXPECT_EQ(d.value, absl::ZeroDuration());
  EXPECT_EQ(AbslUnparseFlag(d), "0");
  EXPECT_EQ(AbslUnparseFlag(AutoDuration{}), "auto");
  EXPECT_EQ(AbslUnparseFlag(AutoDuration{absl::Microseconds(500)}), "500us");
}

TEST(AutoDurationFlagTest, RejectsGarbageWithAMessage) {
  for (const char* text : {"", "bogus", "5", "Auto", "500 us"}) {
    AutoDuration d;
    std::string error;
    EXPECT_FALSE(AbslParseFlag(text, &d, &error)) << text;
    EXPECT_FALSE(error.empty()) << text;
  }
}

}  // namespace
}  // namespace hisa
