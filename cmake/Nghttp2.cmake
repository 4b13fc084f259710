# libnghttp2 for HTTP/2 in libhandoff-http (Debian 12: libnghttp2-dev).
#
# Defines the interface target handoff_nghttp2 (include directories, the
# library, and the definitions below). Debian's 1.52.0-1+deb12u3 carries
# backported protections while NGHTTP2_VERSION still says "1.52.0", so they
# are detected by compiling and linking a call to each, never by version:
#
#   HANDOFF_HAVE_NGHTTP2_STREAM_RESET_RATE_LIMIT
#       nghttp2_option_set_stream_reset_rate_limit (Rapid Reset,
#       CVE-2023-44487; deb12u1, upstream 1.57.0)
#   HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS
#       nghttp2_option_set_max_continuations (CONTINUATION flood,
#       CVE-2024-28182; deb12u2, upstream 1.61.0)
#
# Without them (a vanilla 1.52) the module builds and applies equivalent
# limits of its own. -DHANDOFF_NGHTTP2_IGNORE_BACKPORTS=ON pretends they are
# absent, so that the fallback can be built and tested on Debian too; the
# library's own limits are then turned off where it has them
# (HANDOFF_NGHTTP2_DISABLE_BACKPORTS), so that the tests exercise the
# module's.

option(HANDOFF_NGHTTP2_IGNORE_BACKPORTS
  "Build as against a vanilla libnghttp2 1.52 (use the module's own limits)" OFF)

find_package(PkgConfig REQUIRED)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2>=1.52)

include(CheckCSourceCompiles)
include(CMakePushCheckState)

# handoff_nghttp2_check(VAR FUNCTION ARGS): VAR is true if a program calling
# FUNCTION(opt, ARGS) on an nghttp2_option compiles and links.
function(handoff_nghttp2_check var fn args)
  cmake_push_check_state(RESET)
  set(CMAKE_REQUIRED_INCLUDES ${NGHTTP2_INCLUDE_DIRS})
  set(CMAKE_REQUIRED_LIBRARIES ${NGHTTP2_LINK_LIBRARIES})
  set(CMAKE_REQUIRED_QUIET ON)
  check_c_source_compiles("
#include <nghttp2/nghttp2.h>
int main(void)
{
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return 1;
    ${fn}(opt, ${args});
    nghttp2_option_del(opt);
    return 0;
}" ${var})
  cmake_pop_check_state()
  set(${var} ${${var}} PARENT_SCOPE)
endfunction()

handoff_nghttp2_check(HANDOFF_NGHTTP2_HAS_RESET_RATE_LIMIT
  nghttp2_option_set_stream_reset_rate_limit "1000, 33")
handoff_nghttp2_check(HANDOFF_NGHTTP2_HAS_MAX_CONTINUATIONS
  nghttp2_option_set_max_continuations "8")

add_library(handoff_nghttp2 INTERFACE)
target_link_libraries(handoff_nghttp2 INTERFACE PkgConfig::NGHTTP2)
set(_found "")
if(HANDOFF_NGHTTP2_HAS_RESET_RATE_LIMIT AND NOT HANDOFF_NGHTTP2_IGNORE_BACKPORTS)
  target_compile_definitions(handoff_nghttp2 INTERFACE
    HANDOFF_HAVE_NGHTTP2_STREAM_RESET_RATE_LIMIT=1)
  list(APPEND _found stream_reset_rate_limit)
endif()
if(HANDOFF_NGHTTP2_HAS_MAX_CONTINUATIONS AND NOT HANDOFF_NGHTTP2_IGNORE_BACKPORTS)
  target_compile_definitions(handoff_nghttp2 INTERFACE
    HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS=1)
  list(APPEND _found max_continuations)
endif()
if(HANDOFF_NGHTTP2_IGNORE_BACKPORTS AND HANDOFF_NGHTTP2_HAS_RESET_RATE_LIMIT AND
   HANDOFF_NGHTTP2_HAS_MAX_CONTINUATIONS)
  target_compile_definitions(handoff_nghttp2 INTERFACE HANDOFF_NGHTTP2_DISABLE_BACKPORTS=1)
endif()
if(_found)
  string(REPLACE ";" ", " _found "${_found}")
else()
  set(_found "none: the module's own limits apply")
endif()
message(STATUS "libnghttp2 ${NGHTTP2_VERSION}: backported protections: ${_found}")
unset(_found)
