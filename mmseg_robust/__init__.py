"""mmrobust: brain-tumour segmentation that stays accurate when MRI sequences are missing."""

__version__ = "0.1.0"
