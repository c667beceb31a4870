"""What molpipe writes and reads back: model directories, checkpoints, the safe npz reader.
Plain arrays and JSON, checksummed; nothing is ever unpickled."""
