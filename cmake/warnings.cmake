# Warnings live on an INTERFACE target that every upkeep target links privately.
add_library(upkeep_warnings INTERFACE)
target_compile_options(upkeep_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wnon-virtual-dtor
  -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough)
if(UPKEEP_WERROR)
  target_compile_options(upkeep_warnings INTERFACE -Werror)
endif()
