// The text exposition format, line by line as Prometheus 0.0.4 defines it.

#include "protocol/prometheus_text.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace ferry::prom {
namespace {

TEST(prometheus_text, gauge_family_with_escaped_labels_and_help) {
  text_writer w;
  w.family("ferry_x_bytes", metric_type::gauge, "Bytes of x.\nSecond line \\ end");
  w.sample({{"vm", "a\"b\\c\nd"}, {"host", "h1"}}, 42);
  w.sample({}, 0.25);
  EXPECT_EQ(w.text(), "# HELP ferry_x_bytes Bytes of x.\\nSecond line \\\\ end\n"
                      "# TYPE ferry_x_bytes gauge\n"
                      "ferry_x_bytes{vm=\"a\\\"b\\\\c\\nd\",host=\"h1\"} 42\n"
                      "ferry_x_bytes 0.25\n");
}

TEST(prometheus_text, a_family_without_samples_writes_nothing) {
  text_writer w;
  w.family("ferry_unused", metric_type::gauge, "never sampled");
  w.family("ferry_c_total", metric_type::counter, "c");
  w.sample({{"result", "ok"}}, 3);
  EXPECT_EQ(w.text(), "# HELP ferry_c_total c\n# TYPE ferry_c_total counter\n"
                      "ferry_c_total{result=\"ok\"} 3\n");
}

TEST(prometheus_text, histogram_buckets_are_cumulative_and_end_in_inf) {
  histogram h{{1, 0.5, 5}}; // given unsorted: sorted on construction
  for (double v : {0.1, 0.5, 0.7, 3.0, 100.0})
    h.observe(v);
  EXPECT_EQ(h.count(), 5U);
  text_writer w;
  w.family("ferry_d_seconds", metric_type::histogram, "d");
  w.sample({{"k", "v"}}, h);
  EXPECT_EQ(w.text(), "# HELP ferry_d_seconds d\n# TYPE ferry_d_seconds histogram\n"
                      "ferry_d_seconds_bucket{k=\"v\",le=\"0.5\"} 2\n"
                      "ferry_d_seconds_bucket{k=\"v\",le=\"1\"} 3\n"
                      "ferry_d_seconds_bucket{k=\"v\",le=\"5\"} 4\n"
                      "ferry_d_seconds_bucket{k=\"v\",le=\"+Inf\"} 5\n"
                      "ferry_d_seconds_sum{k=\"v\"} 104.3\n"
                      "ferry_d_seconds_count{k=\"v\"} 5\n");
}

TEST(prometheus_text, a_histogram_counted_elsewhere_renders_the_same) {
  histogram h{{0.5, 1, 5}};
  for (double v : {0.1, 0.5, 0.7, 3.0, 100.0})
    h.observe(v);
  auto copy = histogram::from_counts(h.bounds(), h.counts(), h.sum());
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->count(), 5U);
  text_writer a, b;
  for (auto* w : {&a, &b})
    w->family("ferry_d_seconds", metric_type::histogram, "d");
  a.sample({}, h);
  b.sample({}, *copy);
  EXPECT_EQ(a.text(), b.text());
  EXPECT_FALSE(histogram::from_counts({1, 2}, {1, 2}, 0)) << "one count per bucket and +Inf";
  EXPECT_FALSE(histogram::from_counts({2, 1}, {1, 2, 3}, 0)) << "bounds ascending";
}

TEST(prometheus_text, values) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(-3), "-3");
  EXPECT_EQ(format_value(1073741824), "1073741824");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(1e300), "1e+300");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
}

TEST(prometheus_text, names) {
  EXPECT_TRUE(valid_metric_name("ferry_migration_transferred_bytes"));
  EXPECT_TRUE(valid_metric_name("a:b_c1"));
  EXPECT_FALSE(valid_metric_name("1abc"));
  EXPECT_FALSE(valid_metric_name("a-b"));
  EXPECT_FALSE(valid_metric_name(""));
  EXPECT_TRUE(valid_label_name("vm"));
  EXPECT_FALSE(valid_label_name("__reserved"));
  EXPECT_FALSE(valid_label_name("a:b"));
  EXPECT_FALSE(valid_label_name("9"));
}

} // namespace
} // namespace ferry::prom
