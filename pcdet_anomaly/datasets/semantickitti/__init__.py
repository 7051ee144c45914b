from .dataset import SemanticKittiDataset
from .reader import SequenceReader, list_sequences, read_bin, read_label, write_bin, write_label

__all__ = ["SemanticKittiDataset", "SequenceReader", "list_sequences", "read_bin", "read_label", "write_bin",
           "write_label"]
