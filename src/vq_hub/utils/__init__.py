from .distributed import all_reduce_sum, broadcast_from_main, is_distributed, is_main_process
from .io import atomic_directory

__all__ = ["all_reduce_sum", "atomic_directory", "broadcast_from_main", "is_distributed", "is_main_process"]
