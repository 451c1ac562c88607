# Writes a C++ header that holds a file's bytes, for text that a program embeds (the report's style
# sheet: scheduler/CMakeLists.txt). Run as a build step, so that the header is written again when
# the file changes:
#   cmake -DINPUT=FILE -DOUTPUT=HEADER -DNAMESPACE=ns -DNAME=kName -P EmbedFile.cmake
# The header defines NS::NAME, a std::string_view of the file's bytes (the array behind it ends
# with a NUL that the view leaves out).
foreach(var INPUT OUTPUT NAMESPACE NAME)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "EmbedFile.cmake: -D${var}=... is required")
  endif()
endforeach()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
# Every byte as a character literal, 16 to a line.
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
string(REPEAT "'[^']*'," 16 sixteen)
string(REGEX REPLACE "(${sixteen})" "\\1\n  " bytes "${bytes}")
get_filename_component(source "${INPUT}" NAME)
file(WRITE "${OUTPUT}"
"// Generated from ${source} by cmake/EmbedFile.cmake at build time: do not edit.
#pragma once
#include <string_view>

namespace ${NAMESPACE} {

inline constexpr char ${NAME}Bytes[] = {
  ${bytes}'\\0'};
inline constexpr std::string_view ${NAME}(${NAME}Bytes, ${size});

}  // namespace ${NAMESPACE}
")
