#pragma once
// Text for the report: HTML escaping; numbers, times, hashes and JSON values formatted; fields of
// JSON documents read leniently (number, text). A function that returns HTML says so and escapes
// what it was given; the others return plain text, for h().
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace perennial::sched::report {

// printf into a std::string (any length).
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// htmlEscape (report.h), short: it wraps nearly every string the page shows.
std::string h(std::string_view s);

// T (Unix seconds) in UTC with strftime's FMT; "-" when T is not finite.
std::string utc(double t, const char* fmt);
std::string isoUtc(double t);  // 2024-01-31 12:00:00
// "12.5 s", "3 min 05 s", "2 h 10 min", "1 d 4 h"; "-" for a negative or non-finite span.
std::string duration(double s);
std::string fixed(double v, int decimals);
// An accuracy to 4 decimals; "-" when there is none.
std::string accText(const std::optional<double>& a);
// V when it is finite: what a chart can place and a table can print.
std::optional<double> finite(double v);

// KEY of a JSON object as a finite number (none when absent, not a number or not finite).
std::optional<double> number(const nlohmann::json& j, const char* key);
// KEY of a JSON object as text: a string as it is, "" when absent or null, else its JSON.
std::string text(const nlohmann::json& j, const char* key);

// A hash shortened to KEEP characters, the full value in its tooltip (HTML).
std::string hashHtml(const std::string& s, size_t keep = 12);
// A JSON value as text: numbers to 4 decimals, hashes shortened, objects as key=value lists.
std::string valueText(const nlohmann::json& v, int depth = 0);
// valueText cut to 240 characters, the full value in its tooltip (HTML).
std::string valueHtml(const nlohmann::json& v);

// A box that says there is nothing to show, and why or what would fill it (HTML).
std::string emptyState(const std::string& what, const std::string& hint = "");
// A row of a key/value table: KEY escaped, VALUE_HTML as it is.
std::string kv(const std::string& key, const std::string& valueHtml);

}  // namespace perennial::sched::report
