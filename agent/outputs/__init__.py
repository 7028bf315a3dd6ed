"""What a run is turned into: report files, the FOCUS export, statements, the console summary."""
