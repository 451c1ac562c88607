#pragma once
// Text that came from someone else (file names in incoming/, a request's reason) on its way to a
// terminal, a log or a JSON document. Such text may hold any bytes: invalid UTF-8, escape
// sequences that repaint a terminal, newlines that forge a log line.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace perennial {

// TEXT with every byte that is not printable escaped: control characters (below 0x20, 0x7f) and
// bytes that are not part of valid UTF-8 become \xNN, a backslash becomes \\; valid UTF-8
// characters of 0x80 and above pass unchanged. The result holds no newline and no escape
// sequence, and distinct inputs give distinct results.
std::string printable(std::string_view text);

// J serialised (INDENT as nlohmann's dump) with invalid UTF-8 replaced by U+FFFD, so a foreign
// name can never make serialisation throw. Every JSON that Perennial writes goes through here.
std::string dumpJson(const nlohmann::json& j, int indent = -1);

}  // namespace perennial
