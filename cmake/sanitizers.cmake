# UPKEEP_SANITIZE=address;undefined | thread: applied to every target in the build.
if(UPKEEP_SANITIZE)
  string(REPLACE ";" "," _upkeep_san "${UPKEEP_SANITIZE}")
  add_compile_options(-fsanitize=${_upkeep_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_upkeep_san})
endif()
