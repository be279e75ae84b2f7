"""adaptflow: representation and transfer learning as MLOps pipeline stages."""
