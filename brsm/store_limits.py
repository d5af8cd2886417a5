"""What the object stores accept (AWS S3 and Alibaba OSS documentation), in one place: the config
checks part sizes against it at load time, and the storage adapters report it in their properties.

Every part but the last at least ``MIN_PART[scheme]``, at most ``MAX_PART`` bytes, at most
``MAX_PARTS`` parts; one PUT (below multipart_threshold) at most ``MAX_PUT`` bytes.
"""
MIN_PART = {"s3": 5 << 20, "oss": 100 << 10}
MAX_PART = 5 << 30
MAX_PUT = 5 << 30
MAX_PARTS = 10_000
