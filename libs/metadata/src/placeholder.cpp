namespace upkeep::metadata {}
