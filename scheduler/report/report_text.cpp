#include "scheduler/report/report_text.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <ctime>

#include "common/text.h"
#include "scheduler/report/report.h"

namespace perennial::sched {

std::string htmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      case '\t': case '\n': case '\r': out += ch; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
          out += "\xEF\xBF\xBD";
        } else {
          out += ch;
        }
    }
  }
  return out;
}

}  // namespace perennial::sched

namespace perennial::sched::report {
namespace {

using nlohmann::json;

bool isHash(const std::string& s) {
  return s.size() >= 40 && std::all_of(s.begin(), s.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         });
}

}  // namespace

std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return "";
  if (static_cast<size_t>(n) < sizeof buf) return buf;
  std::string big(static_cast<size_t>(n) + 1, '\0');
  va_start(ap, fmt);
  std::vsnprintf(big.data(), big.size(), fmt, ap);
  va_end(ap);
  big.resize(static_cast<size_t>(n));
  return big;
}

std::string h(std::string_view s) { return htmlEscape(s); }

std::string utc(double t, const char* fmt) {
  if (!std::isfinite(t)) return "-";
  const std::time_t tt = static_cast<std::time_t>(std::floor(t));
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, fmt, &tm);
  return buf;
}
std::string isoUtc(double t) { return utc(t, "%Y-%m-%d %H:%M:%S"); }

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "-";
  if (s < 60) return format("%.1f s", s);
  const auto total = static_cast<long long>(std::llround(s));
  if (s < 3600) return format("%lld min %02lld s", total / 60, total % 60);
  if (s < 86400) return format("%lld h %02lld min", total / 3600, total % 3600 / 60);
  return format("%lld d %lld h", total / 86400, total % 86400 / 3600);
}

std::string fixed(double v, int decimals) { return format("%.*f", decimals, v); }

std::string accText(const std::optional<double>& a) { return a ? fixed(*a, 4) : "-"; }

std::optional<double> finite(double v) {
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<double> number(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  const double v = it->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::string text(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : dumpJson(*it);
}

std::string hashHtml(const std::string& s, size_t keep) {
  if (s.empty()) return "<span class=\"muted\">-</span>";
  if (s.size() <= keep + 2) return "<code>" + h(s) + "</code>";
  return "<code title=\"" + h(s) + "\">" + h(s.substr(0, keep)) + "&hellip;</code>";
}

std::string valueText(const json& v, int depth) {
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer() || v.is_number_unsigned()) return dumpJson(v);
  if (v.is_number()) {
    const double d = v.get<double>();
    if (d == std::floor(d) && std::fabs(d) < 1e12) return format("%.0f", d);
    if (std::fabs(d) >= 1e-3 || d == 0) return fixed(d, 4);
    return format("%.3g", d);
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    return isHash(s) ? s.substr(0, 12) + "\xE2\x80\xA6" : s;
  }
  std::string out;
  if (v.is_array()) {
    for (const auto& e : v) out += (out.empty() ? "" : ", ") + valueText(e, depth + 1);
    return "[" + out + "]";
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    out += (out.empty() ? "" : ", ") + it.key() + "=" + valueText(it.value(), depth + 1);
  }
  return depth ? "{" + out + "}" : out;
}

std::string valueHtml(const json& v) {
  std::string t = valueText(v);
  const std::string full = v.is_string() ? v.get<std::string>() : dumpJson(v);
  if (t.size() > 240) t = t.substr(0, 237) + "...";
  return "<span title=\"" + h(full.size() > 2000 ? full.substr(0, 2000) : full) + "\">" + h(t) + "</span>";
}

std::string emptyState(const std::string& what, const std::string& hint) {
  return "<div class=\"empty\"><strong>" + h(what) + "</strong>" + (hint.empty() ? "" : "<br><span>" + h(hint) + "</span>") +
         "</div>";
}

std::string kv(const std::string& key, const std::string& valueHtml) {
  return "<tr><th>" + h(key) + "</th><td>" + valueHtml + "</td></tr>";
}

}  // namespace perennial::sched::report
