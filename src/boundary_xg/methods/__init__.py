"""Attribution methods, each written once over the backend interface."""
