# UPKEEP_SANITIZE=address;undefined | thread: applied to every target in the build.
if(UPKEEP_SANITIZE)
  string(REPLACE ";" "," _upkeep_san "${UPKEEP_SANITIZE}")
  add_compile_options(-fsanitize=${_upkeep_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_upkeep_san})
endif()

# Fuzzing: every library is built with libFuzzer's coverage instrumentation (not its main), so the
# fuzzers see the code they exercise, not only their own file.
if(UPKEEP_BUILD_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
