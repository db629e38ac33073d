# upkeep_library(NAME ... SOURCES ... PUBLIC_DEPS ... PRIVATE_DEPS ...)
# Declares libs/<name> as upkeep_<name> with alias upkeep::<name>; only include/ is public.
function(upkeep_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(upkeep_${name} STATIC ${ARG_SOURCES})
  add_library(upkeep::${name} ALIAS upkeep_${name})
  target_include_directories(upkeep_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
                                            PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(upkeep_${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS} upkeep_warnings)
endfunction()

# upkeep_test(NAME SOURCES ... DEPS ... LABELS ...): one GoogleTest executable per library.
function(upkeep_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main upkeep_warnings)
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT 300
    DISCOVERY_TIMEOUT 60)
endfunction()
